"""The scan viewer's pictures, from a scan's newest
reconstruction: slices in three planes and a maximum-intensity projection as PNG
(fixed colour map, ROI outlines) and a colour bar in mmol Fe/L. The DICOM download
is built by ``imaging.dicom_export``.

Arrays in, bytes out; the views do the scoping and the auditing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from imaging import processing, uploads
from recon.quantify import Grid

PLANES = {
    # name: (axis of the volume [z, y, x] that is sliced, label, horizontal axis, vertical axis)
    "axial": (0, "Axial (x–y)", "x", "y"),
    "coronal": (1, "Coronal (x–z)", "x", "z"),
    "sagittal": (2, "Sagittal (y–z)", "y", "z"),
}
COLORMAP = "inferno"  # perceptually uniform, readable in greyscale print
# Outline colours that stay visible on both ends of the inferno map (black and pale yellow).
ROI_COLOURS = ["#22d3ee", "#a3e635", "#f472b6", "#2563eb", "#10b981", "#c084fc"]
TARGET_PIXELS = 384


@dataclass(frozen=True)
class Volume:
    values: np.ndarray  # (nz, ny, nx), mol Fe / L
    grid: Grid

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape

    @property
    def vmax(self) -> float:
        # The 99.9th percentile, so one hot voxel does not wash out the rest.
        positive = self.values[self.values > 0]
        return float(np.percentile(positive, 99.9)) if positive.size else 1.0


def load(reconstruction) -> Volume:
    loaded = processing.load_volume(uploads.media_path(reconstruction.file))
    return Volume(loaded.values, loaded.grid)


def roi_masks(rois, grid: Grid) -> list[tuple[object, np.ndarray]]:
    """[(roi, mask (nz, ny, nx) bool)] for the regions drawn on the viewer (the same masks
    as the DICOM SEG: ``imaging.dicom_export.roi_mask``)."""
    from imaging.dicom_export import roi_mask

    return [(roi, mask) for roi in rois if (mask := roi_mask(roi, grid)) is not None]


def plane_image(volume: Volume, plane: str, index: int | None) -> tuple[np.ndarray, int]:
    """(2-D image with rows top to bottom, the slice index used); plane "mip" projects along z."""
    if plane == "mip":
        return volume.values.max(axis=0), 0
    axis = PLANES[plane][0]
    n = volume.shape[axis]
    index = n // 2 if index is None else min(max(int(index), 0), n - 1)
    return np.take(volume.values, index, axis=axis), index


def _lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def render_png(volume: Volume, plane: str, index: int | None, masks) -> bytes:
    """The slice through the fixed colour map, scaled up (nearest voxel) with ROI outlines."""
    from PIL import Image

    image, index = plane_image(volume, plane, index)
    scaled = np.clip(image / volume.vmax, 0.0, 1.0)
    rgb = _lut()[(scaled * 255).astype(np.int64)]
    rows, cols = image.shape
    factor = max(1, TARGET_PIXELS // max(rows, cols))
    rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
    for number, (_roi, mask) in enumerate(masks):
        section = mask.any(axis=0) if plane == "mip" else np.take(mask, index, axis=PLANES[plane][0])
        if not section.any():
            continue
        big = section.repeat(factor, axis=0).repeat(factor, axis=1)
        edge = _outline(big)
        # Two pixels thick, so the outline reads at any zoom.
        edge = edge | np.roll(edge, 1, axis=0) & big | np.roll(edge, 1, axis=1) & big
        rgb[edge] = _rgb(ROI_COLOURS[number % len(ROI_COLOURS)])
    # Row 0 of the array is the lowest coordinate: flip so "up" on screen is +y / +z.
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[::-1])).save(out, format="PNG", optimize=False)
    return out.getvalue()


def colour_bar(vmax_mol_per_l: float) -> SafeString:
    """A vertical SVG colour bar labelled in mmol Fe/L (the scale of every image of the scan)."""
    lut = _lut()
    stops = "".join(
        f'<stop offset="{i / 10:.1f}" stop-color="#{lut[int(i * 25.5)][0]:02x}{lut[int(i * 25.5)][1]:02x}'
        f'{lut[int(i * 25.5)][2]:02x}"/>'
        for i in range(11)
    )
    vmax = vmax_mol_per_l * 1e3
    labels = "".join(
        f'<text x="34" y="{214 - 200 * f + 4:.1f}" font-size="12" fill="#1d2733">{vmax * f:.3g}</text>'
        f'<line x1="24" x2="30" y1="{214 - 200 * f:.1f}" y2="{214 - 200 * f:.1f}" stroke="#1d2733"/>'
        for f in (0, 0.25, 0.5, 0.75, 1.0)
    )
    return mark_safe(  # noqa: S308 - numbers and the escaped colour-map name only
        '<svg class="colourbar" viewBox="0 0 110 250" role="img" aria-labelledby="cb-t" '
        'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="cb-t">Colour scale: iron concentration from 0 to {vmax:.3g} mmol Fe/L ({escape(COLORMAP)})</title>'
        f'<defs><linearGradient id="cb-g" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>'
        '<rect x="4" y="14" width="20" height="200" fill="url(#cb-g)" stroke="#1d2733"/>'
        f'{labels}<text x="4" y="240" font-size="12" fill="#5b6b7c">mmol Fe/L</text></svg>'
    )


def roi_legend(masks) -> list[dict]:
    return [{"roi": roi, "colour": ROI_COLOURS[i % len(ROI_COLOURS)]} for i, (roi, _) in enumerate(masks)]


# --------------------------------------------------------------------------- viewer tools
# The numbers under the cursor and inside a drawn region come from the stored values
# (mol Fe / L per voxel), never from the PNG's colours: iron per voxel in ng Fe is
# concentration x voxel volume x 55.845 g/mol (without the per-region calibration factor
# of the quantification, which belongs to the named regions' table).

# plane -> (sliced axis, horizontal axis, vertical axis) as indices into (x, y, z)
PLANE_AXES = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}


def ng_per_voxel(volume: Volume) -> float:
    """ng Fe in one voxel per mol Fe / L."""
    from recon.physics import IRON_MOLAR_MASS_G_PER_MOL

    return volume.grid.voxel_volume_l * IRON_MOLAR_MASS_G_PER_MOL * 1e9


def lut_hex() -> list[str]:
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in _lut()]


def slice_payload(volume: Volume, plane: str, index: int | None) -> dict:
    """One slice as iron per voxel (ng Fe), rows top to bottom as on screen (row 0 is the
    highest coordinate, as in :func:`render_png`), with what the viewer needs to draw and
    to name the voxel under the cursor."""
    image, index = plane_image(volume, plane, index)
    scale = ng_per_voxel(volume)
    _, h_axis, v_axis = PLANE_AXES[plane]
    voxel_mm = volume.grid.voxel_size_m * 1e3
    return {
        "plane": plane,
        "index": index,
        "count": volume.shape[PLANES[plane][0]],
        "rows": int(image.shape[0]),
        "cols": int(image.shape[1]),
        "axes": ["xyz"[h_axis], "xyz"[v_axis]],
        "voxel_mm": [round(float(voxel_mm[h_axis]), 4), round(float(voxel_mm[v_axis]), 4)],
        "unit": "ng Fe per voxel",
        "vmax_ng": float(f"{volume.vmax * scale:.4g}"),
        # 4 significant digits: far below the reconstruction's noise, a third of the bytes.
        "values_ng": [[float(f"{v:.4g}") for v in row] for row in (image[::-1] * scale).tolist()],
    }


def region_geometry(volume: Volume, plane: str, index: int, h: tuple[int, int], v: tuple[int, int]) -> dict:
    """The box geometry record (metres, as ``imaging.services.rois`` stores it) of the voxels
    h[0]..h[1] x v[0]..v[1] (inclusive, array order: v counts up from the lowest coordinate)
    of slice ``index`` of ``plane``: one voxel deep across the plane."""
    grid = volume.grid
    sliced, h_axis, v_axis = PLANE_AXES[plane]
    ranges = {sliced: (index, index), h_axis: tuple(sorted(h)), v_axis: tuple(sorted(v))}
    size = grid.voxel_size_m
    centre, half = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    for axis, (lo, hi) in ranges.items():
        start = grid.center_m[axis] - grid.fov_m[axis] / 2
        centre[axis] = float(start + (lo + hi + 1) / 2 * size[axis])
        half[axis] = float((hi - lo + 1) / 2 * size[axis])
    return {"shape": "box", "center_m": centre, "half_size_m": half}


def region_iron(volume: Volume, geometry: dict) -> dict:
    """Iron (ng Fe) inside a geometry record, from the stored values, with the same mask
    as a region of interest of that geometry (``imaging.dicom_export.roi_mask``)."""
    from recon.quantify import mask_from_record

    nx, ny, nz = volume.grid.size
    mask = np.asarray(mask_from_record(volume.grid, geometry), dtype=bool).reshape(nz, ny, nx)
    inside = volume.values[mask]
    scale = ng_per_voxel(volume)
    return {
        "voxels": int(mask.sum()),
        "iron_ng": float(inside.sum() * scale),
        "max_ng": float(inside.max() * scale) if inside.size else 0.0,
        "mean_mmol_per_l": float(inside.mean() * 1e3) if inside.size else 0.0,
    }
