"""From a reconstructed iron-concentration image to iron mass, cells and retention.

Conventions: a volume is the reconstruction's voxel vector (P,) in mol Fe / L,
voxels x fastest (MDF order "xyz"); the grid is given by ``size`` (nx, ny, nz),
``fov_m`` and ``center_m`` (m, scanner coordinates). Masks are (P,) bool.

Iron mass of an ROI (ng) = Σ over its voxels of (c − background level) ·
voxel volume [L] · 55.845 g/mol · 1e9. The background level and the noise SD
are measured in voxels outside all (margin-grown) ROIs, or from
reconstructions of background frames when given. A voxel counts as signal
above mean + k·SD (k = 5 by default, the usual cell-tracking choice).

Uncertainty of an ROI mass (1 SD, ng) combines in quadrature
- the noise term: SD · √n · V_voxel · 55.845e9 (n voxels, independent noise
  assumed; reconstructions correlate neighbours, so this is a lower bound), and
- the calibration term: ``calibration_rel_uncertainty`` × mass, the relative
  uncertainty of the delta sample's iron content, which scales every voxel.
The detection limit of an ROI is k × its noise term: an ROI is "detected"
when its mass exceeds it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from recon.phantoms import shape_contains
from recon.physics import IRON_MOLAR_MASS_G_PER_MOL

OFF_TARGET_KINDS = ("lungs", "liver", "spleen", "other")
ROI_KINDS = ("target",) + OFF_TARGET_KINDS
#: Default relative 1-SD uncertainty of the calibration's delta sample iron.
DEFAULT_CALIBRATION_REL_UNCERTAINTY = 0.05
#: The size of each ROI shape (m), by the key a geometry record gives it under.
GEOMETRY_SIZE_KEYS = {"sphere": "radius_m", "ellipsoid": "semi_axes_m", "box": "half_size_m"}


@dataclass(frozen=True)
class Grid:
    """Reconstruction grid: size (nx, ny, nz), field of view and centre (m)."""

    size: tuple[int, int, int]
    fov_m: tuple[float, float, float]
    center_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.size) != 3 or min(self.size) < 1:
            raise ValueError(f"size needs 3 positive entries, got {self.size}")
        if len(self.fov_m) != 3 or min(self.fov_m) <= 0:
            raise ValueError(f"fov_m needs 3 positive entries (m), got {self.fov_m}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "fov_m", tuple(float(v) for v in self.fov_m))
        object.__setattr__(self, "center_m", tuple(float(v) for v in self.center_m))

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    @property
    def voxel_size_m(self) -> np.ndarray:
        return np.asarray(self.fov_m) / np.asarray(self.size)

    @property
    def voxel_volume_l(self) -> float:
        return float(np.prod(self.voxel_size_m)) * 1e3

    def centres_m(self) -> np.ndarray:
        """(P, 3) voxel centres, x fastest."""
        axes = [
            self.center_m[a] - self.fov_m[a] / 2 + (np.arange(self.size[a]) + 0.5) * self.voxel_size_m[a]
            for a in range(3)
        ]
        z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)

    def to_volume(self, values: np.ndarray) -> np.ndarray:
        """(P,) x-fastest vector → (nx, ny, nz) array indexed [ix, iy, iz]."""
        return np.asarray(values).reshape(self.size, order="F")


@dataclass(frozen=True)
class Roi:
    """A region of interest with its mask on the grid."""

    name: str
    kind: str
    mask: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class RoiMeasurement:
    """Quantification of one ROI.

    iron_mass_ng, uncertainty_ng, detection_limit_ng : ng Fe
    num_voxels : voxels in the (integration) mask
    num_voxels_above_threshold : voxels above mean + k·SD
    mean_concentration_mol_per_l : background-corrected mean in the mask
    cell_count, cell_count_uncertainty : with ``pg_fe_per_cell`` (else None)
    retention_percent (± retention_uncertainty_percent) : this ROI's iron /
        injected iron, when ``injected_iron_ng`` was given (else None)
    off_target_percent : an off-target ROI's share of the iron in all detected
        ROIs (0 when it is not detected or nothing is; None for a target ROI)
    """

    name: str
    kind: str
    iron_mass_ng: float
    uncertainty_ng: float
    detection_limit_ng: float
    detected: bool
    num_voxels: int
    num_voxels_above_threshold: int
    mean_concentration_mol_per_l: float
    cell_count: float | None = None
    cell_count_uncertainty: float | None = None
    retention_percent: float | None = None
    retention_uncertainty_percent: float | None = None
    off_target_percent: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuantificationResult:
    """Per-ROI measurements and the whole-subject figures.

    background_level_mol_per_l, noise_sd_mol_per_l : outside all ROIs
    voxel_threshold_mol_per_l : background + k·SD
    retention_percent (± retention_uncertainty_percent) : target iron /
        injected iron, when ``injected_iron_ng`` was given
    off_target_percent : iron in detected off-target ROIs / iron in all
        detected ROIs (negative masses counted as 0)
    """

    rois: tuple[RoiMeasurement, ...]
    k: float
    background_level_mol_per_l: float
    noise_sd_mol_per_l: float
    voxel_threshold_mol_per_l: float
    voxel_volume_l: float
    total_detected_iron_ng: float
    off_target_percent: float | None
    retention_percent: float | None = None
    retention_uncertainty_percent: float | None = None
    injected_iron_ng: float | None = None
    pg_fe_per_cell: float | None = None
    calibration_rel_uncertainty: float = DEFAULT_CALIBRATION_REL_UNCERTAINTY
    notes: tuple[str, ...] = ()

    def roi(self, name: str) -> RoiMeasurement:
        for r in self.rois:
            if r.name == name:
                return r
        raise KeyError(f"no ROI named {name!r}; have {[r.name for r in self.rois]}")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["rois"] = [r.as_dict() for r in self.rois]
        out["notes"] = list(self.notes)
        return out


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


def mask_from_geometry(grid: Grid, shape: str, center_m, size_m, margin_m: float = 0.0) -> np.ndarray:
    """(P,) bool: voxels whose centre lies in the shape grown by ``margin_m``.

    shape: "sphere" (size_m = radius, scalar or 3), "ellipsoid" (semi-axes),
    "box" (half sizes). Axes with a single voxel (2D slice) ignore that
    coordinate, so a sphere cuts the slice in its own central plane.
    """
    size = np.broadcast_to(np.asarray(size_m, dtype=np.float64), (3,)).copy()
    if np.any(size <= 0):
        raise ValueError(f"ROI size must be > 0 m, got {size_m}")
    if margin_m < 0:
        raise ValueError(f"margin_m must be >= 0, got {margin_m}")
    centres = grid.centres_m()
    flat = np.asarray(grid.size) == 1
    centres = centres.copy()
    centres[:, flat] = np.asarray(center_m, dtype=np.float64)[flat]
    return shape_contains(shape, center_m, size + margin_m, centres)


def rois_from_labels(labels: np.ndarray, mapping: dict[int, tuple[str, str]]) -> list[Roi]:
    """ROIs from an integer label volume (P,) x fastest, or (nx, ny, nz)
    (Fortran-flattened). ``mapping``: label → (name, kind); label 0 = none."""
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array, got dtype {lab.dtype}")
    flat = lab.ravel(order="F") if lab.ndim == 3 else lab.ravel()
    rois = []
    for value, (name, kind) in mapping.items():
        if kind not in ROI_KINDS:
            raise ValueError(f"ROI kind must be one of {ROI_KINDS}, got {kind!r} for label {value}")
        rois.append(Roi(name, kind, flat == int(value)))
    return rois


def rois_from_records(records: list[dict], grid: Grid, margin_m: float = 0.0) -> list[Roi]:
    """ROIs from the JSON records ({name, kind, shape, center_m, radius_m |
    semi_axes_m | half_size_m})."""
    rois = []
    for rec in records:
        try:
            name, kind, shape, _ = rec["name"], rec["kind"], rec["shape"], rec["center_m"]
        except KeyError as exc:
            raise ValueError(f"ROI record {rec!r} lacks {exc.args[0]!r}") from None
        if kind not in ROI_KINDS:
            raise ValueError(f"ROI {name!r}: kind must be one of {ROI_KINDS}, got {kind!r}")
        key = GEOMETRY_SIZE_KEYS.get(shape)
        if key is None:
            raise ValueError(f"ROI {name!r}: shape must be sphere, ellipsoid or box, got {shape!r}")
        if key not in rec:
            raise ValueError(f"ROI {name!r} ({shape}) needs {key!r}")
        rois.append(Roi(name, kind, mask_from_record(grid, rec, margin_m)))
    return rois


def mask_from_record(grid: Grid, record: dict, margin_m: float = 0.0) -> np.ndarray:
    """:func:`mask_from_geometry` of a geometry record ({shape, center_m, and the
    shape's size under its key in :data:`GEOMETRY_SIZE_KEYS`})."""
    shape = record["shape"]
    return mask_from_geometry(grid, shape, record["center_m"], record[GEOMETRY_SIZE_KEYS[shape]], margin_m)


def reconstruction_frames(f) -> tuple[Grid, np.ndarray]:
    """The grid and the reconstructed frames (F, P) float64, mol Fe / L, of an open
    reconstruction MDF (``recon.mdf.MDFFile``): every reader of a reconstruction
    volume starts here."""
    data, meta = f.reconstruction()
    if meta["size"] is None:
        raise ValueError(f"{f.path}: reconstruction has no size")
    unit = meta.get("unit")
    if unit not in (None, "mol/L"):
        raise ValueError(f"{f.path}: unit {unit!r}, expected 'mol/L'")
    grid = Grid(tuple(meta["size"]), tuple(meta["fieldOfView"]), tuple(meta["fieldOfViewCenter"]))
    return grid, data[..., 0].astype(np.float64)


def load_rois_json(path: str | os.PathLike) -> list[dict]:
    """Records from a ROIs JSON file: a list, or an object with key "rois"."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    records = data["rois"] if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of ROIs, got {type(records).__name__}")
    return records


# ---------------------------------------------------------------------------
# Quantification
# ---------------------------------------------------------------------------


def quantify(
    concentration_mol_per_l: np.ndarray,
    grid: Grid,
    rois: list[Roi],
    *,
    k: float = 5.0,
    background_volumes: np.ndarray | None = None,
    injected_iron_ng: float | None = None,
    pg_fe_per_cell: float | None = None,
    calibration_rel_uncertainty: float = DEFAULT_CALIBRATION_REL_UNCERTAINTY,
) -> QuantificationResult:
    """Iron per ROI from a concentration image.

    Parameters
    ----------
    concentration_mol_per_l : (P,) float — voxels x fastest
    grid : Grid
    rois : list of Roi — masks (P,) bool; they should not overlap
    k : float — detection threshold in noise SDs
    background_volumes : (B, P) float or None — reconstructions of background
        frames; when given, background level and noise come from their voxels
        (all of them) instead of the image outside the ROIs
    injected_iron_ng : float or None — for retention %
    pg_fe_per_cell : float or None — for cell counts
    calibration_rel_uncertainty : float — relative 1-SD calibration term

    Returns
    -------
    QuantificationResult
    """
    c = np.asarray(concentration_mol_per_l, dtype=np.float64)
    if c.ndim != 1 or c.shape[0] != grid.num_voxels:
        raise ValueError(f"concentration has shape {c.shape}, expected ({grid.num_voxels},) for grid {grid.size}")
    if not np.all(np.isfinite(c)):
        raise ValueError("concentration contains NaN or inf")
    if not rois:
        raise ValueError("no ROIs given")
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    if injected_iron_ng is not None and injected_iron_ng <= 0:
        raise ValueError(f"injected_iron_ng must be > 0, got {injected_iron_ng}")
    if pg_fe_per_cell is not None and pg_fe_per_cell <= 0:
        raise ValueError(f"pg_fe_per_cell must be > 0, got {pg_fe_per_cell}")
    for roi in rois:
        if roi.mask.shape != c.shape:
            raise ValueError(f"ROI {roi.name!r} mask has shape {roi.mask.shape}, expected {c.shape}")
    notes = []
    if background_volumes is not None:
        bgv = np.asarray(background_volumes, dtype=np.float64)
        if bgv.ndim != 2 or bgv.shape[1] != c.shape[0]:
            raise ValueError(f"background_volumes have shape {bgv.shape}, expected (B, {c.shape[0]})")
        level, sd = float(bgv.mean()), float(bgv.std())
        notes.append(f"background from {bgv.shape[0]} background-frame reconstructions")
    else:
        outside = ~np.any(np.stack([r.mask for r in rois]), axis=0)
        if outside.sum() < 2:
            raise ValueError(f"only {int(outside.sum())} voxels lie outside all ROIs: cannot measure background")
        level, sd = float(c[outside].mean()), float(c[outside].std())
        notes.append(f"background from {int(outside.sum())} voxels outside all ROIs")
    threshold = level + k * sd
    mass_per_mol_l = grid.voxel_volume_l * IRON_MOLAR_MASS_G_PER_MOL * 1e9  # ng per (mol/L · voxel)
    measurements = []
    for roi in rois:
        n = int(roi.mask.sum())
        vals = c[roi.mask] - level
        mass = float(vals.sum() * mass_per_mol_l)
        noise_ng = sd * math.sqrt(n) * mass_per_mol_l
        unc = math.hypot(noise_ng, calibration_rel_uncertainty * mass)
        limit = k * noise_ng
        cells = cells_unc = None
        if pg_fe_per_cell is not None:
            cells = mass * 1e3 / pg_fe_per_cell
            cells_unc = unc * 1e3 / pg_fe_per_cell
        measurements.append(
            RoiMeasurement(
                name=roi.name,
                kind=roi.kind,
                iron_mass_ng=mass,
                uncertainty_ng=unc,
                detection_limit_ng=limit,
                detected=bool(n > 0 and mass > limit),
                num_voxels=n,
                num_voxels_above_threshold=int(np.count_nonzero(c[roi.mask] > threshold)),
                mean_concentration_mol_per_l=float(vals.mean()) if n else 0.0,
                cell_count=cells,
                cell_count_uncertainty=cells_unc,
            )
        )
    detected = [m for m in measurements if m.detected]
    total = float(sum(max(m.iron_mass_ng, 0.0) for m in detected))
    off = float(sum(max(m.iron_mass_ng, 0.0) for m in detected if m.kind in OFF_TARGET_KINDS))
    off_pct = _percent(off, total)
    # Every percentage of the result is computed here, once: the platform stores them per
    # ROI and shows what it stored (imaging.Measurement), never a recomputation.
    measurements = [
        replace(
            m,
            retention_percent=_percent(m.iron_mass_ng, injected_iron_ng),
            retention_uncertainty_percent=_percent(m.uncertainty_ng, injected_iron_ng),
            off_target_percent=None
            if m.kind not in OFF_TARGET_KINDS
            else (_percent(max(m.iron_mass_ng, 0.0), total) or 0.0)
            if m.detected
            else 0.0,
        )
        for m in measurements
    ]
    retention = retention_unc = None
    if injected_iron_ng is not None:
        target = [m for m in measurements if m.kind == "target"]
        if target:
            retention = _percent(sum(m.iron_mass_ng for m in target), injected_iron_ng)
            retention_unc = _percent(math.sqrt(sum(m.uncertainty_ng**2 for m in target)), injected_iron_ng)
        else:
            notes.append("no target ROI: retention not computed")
    return QuantificationResult(
        rois=tuple(measurements),
        k=float(k),
        background_level_mol_per_l=level,
        noise_sd_mol_per_l=sd,
        voxel_threshold_mol_per_l=threshold,
        voxel_volume_l=grid.voxel_volume_l,
        total_detected_iron_ng=total,
        off_target_percent=off_pct,
        retention_percent=retention,
        retention_uncertainty_percent=retention_unc,
        injected_iron_ng=injected_iron_ng,
        pg_fe_per_cell=pg_fe_per_cell,
        calibration_rel_uncertainty=calibration_rel_uncertainty,
        notes=tuple(notes),
    )


def _percent(part: float, whole: float | None) -> float | None:
    """100 · part / whole; None without a (positive) whole."""
    return 100.0 * part / whole if whole else None


def default_margin_m(grid: Grid) -> float:
    """ROI integration margin: one voxel (largest in-plane edge), so the
    reconstruction's blur across the ROI border is counted."""
    vs = grid.voxel_size_m[np.asarray(grid.size) > 1]
    return float(vs.max()) if vs.size else 0.0


def quantify_file(
    reconstruction_path: str | os.PathLike,
    rois_path: str | os.PathLike,
    *,
    k: float = 5.0,
    frame: int | None = None,
    margin_m: float | None = None,
    injected_iron_ng: float | None = None,
    pg_fe_per_cell: float | None = None,
    calibration_rel_uncertainty: float = DEFAULT_CALIBRATION_REL_UNCERTAINTY,
) -> QuantificationResult:
    """Quantify a reconstruction MDF with a ROIs JSON file.

    ``frame``: reconstructed frame to use; None = mean over all frames
    (static subject, lower noise). ``margin_m``: ROI growth for integration;
    None = one voxel (:func:`default_margin_m`).
    """
    from recon.mdf import MDFFile

    with MDFFile(reconstruction_path) as f:
        grid, vols = reconstruction_frames(f)
    if frame is None:
        c = vols.mean(axis=0)
    else:
        if not -vols.shape[0] <= frame < vols.shape[0]:
            raise ValueError(f"frame {frame} out of range for {vols.shape[0]} reconstructed frames")
        c = vols[frame]
    margin = default_margin_m(grid) if margin_m is None else margin_m
    rois = rois_from_records(load_rois_json(rois_path), grid, margin)
    return quantify(
        c,
        grid,
        rois,
        k=k,
        injected_iron_ng=injected_iron_ng,
        pg_fe_per_cell=pg_fe_per_cell,
        calibration_rel_uncertainty=calibration_rel_uncertainty,
    )
