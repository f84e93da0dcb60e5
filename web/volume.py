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
