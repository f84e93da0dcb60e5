"""Where the web side meets ``recon``: file inspection, reconstruction, quantification.

Nothing here touches the database: services call these functions outside their
transactions (slow I/O and numerics never hold a lock) and record the outcome.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from django.conf import settings

import recon
from recon import quantify as q
from recon import validate as recon_validate
from recon.checksum import sha256_file as sha256_file  # re-exported: imaging hashes files through processing
from recon.mdf import MDFError, MDFFile, ReadLimits
from recon.params import ReconParams

Progress = Callable[[str, float], None]


def software_version() -> dict:
    try:
        platform_version = importlib.metadata.version("mpi-trials")
    except importlib.metadata.PackageNotFoundError:
        platform_version = "unknown"
    return {
        "recon": recon.__version__,
        "platform": platform_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- bounded reading


def read_limits(*, max_declared_bytes: int | None = None) -> ReadLimits:
    """What any file may declare before recon reads a byte of its data (issue #12: a
    150 KB upload declaring 10**12 values kept a worker busy for an hour)."""
    return ReadLimits(
        max_declared_bytes=max_declared_bytes or settings.IMAGING_MAX_DECLARED_BYTES,
        max_compression_ratio=settings.IMAGING_MAX_COMPRESSION_RATIO,
        max_objects=settings.IMAGING_MAX_HDF5_OBJECTS,
        max_attributes=settings.IMAGING_MAX_HDF5_OBJECTS,
    )


def open_mdf(path: str | Path) -> MDFFile:
    """Every MDF file the platform reads is opened here, under :func:`read_limits`."""
    return MDFFile(path, limits=read_limits())


# --------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class Inspection:
    report: dict  # ValidationReport.as_dict()
    kind: str | None
    acquisition: dict | None  # drive-field settings, when readable
    problems_text: str  # one line per problem, for a rejection reason

    @property
    def valid(self) -> bool:
        return bool(self.report["valid"])


def _acquisition(f: MDFFile) -> dict:
    strength = np.asarray(f.drive_strength_t, dtype=float)
    amplitudes = strength[0, :, 0].tolist() if strength.ndim == 3 and strength.size else []
    return {
        "base_frequency_hz": float(f.base_frequency_hz),
        "dividers": [int(d) for d in f.dividers],
        "drive_amplitudes_t": [float(a) for a in amplitudes],
        "receive_channels": int(f.num_receive_channels),
        "sampling_points": int(f.num_sampling_points),
        "frames": int(f.num_frames),
    }


def inspect(path: str | Path) -> Inspection:
    """Validate an MDF file with recon and read its drive-field settings. Never raises."""
    report = recon_validate.validate(path, limits=read_limits())
    as_dict = report.as_dict()
    problems = "; ".join(f"{p.code} at {p.path or '/'}: {p.message}" for p in report.problems)
    acquisition = None
    if report.valid:
        try:
            with open_mdf(path) as f:
                acquisition = _acquisition(f)
        except MDFError as exc:  # validate() opens it too, so this is rare
            return Inspection(as_dict | {"valid": False}, report.kind, None, str(exc))
    return Inspection(as_dict, report.kind, acquisition, problems)


def calibration_summary(path: str | Path) -> dict:
    """What the library stores about a calibration: grid, field of view, SNR."""
    with open_mdf(path) as f:
        snr = np.asarray(f.snr, dtype=float) if f.snr is not None else np.zeros(0)
        finite = snr[np.isfinite(snr)]
        return {
            "grid_size": list(f.calibration_size or (0, 0, 0)),
            "field_of_view_m": [float(v) for v in (f.field_of_view_m if f.field_of_view_m is not None else [])],
            "field_of_view_center_m": [
                float(v) for v in (f.field_of_view_center_m if f.field_of_view_center_m is not None else [0, 0, 0])
            ],
            "frequencies_count": int(f.num_frequencies),
            "receive_channels": int(f.num_receive_channels),
            "snr_summary": {
                "max": float(finite.max()) if finite.size else None,
                "median": float(np.median(finite)) if finite.size else None,
                "above_3": int((finite >= 3).sum()),
                "above_5": int((finite >= 5).sum()),
            },
            "delta_concentration_mol_per_l": f.tracer_concentration_mol_per_l,
            "acquisition": _acquisition(f),
        }


# --------------------------------------------------------------------------- reconstruction


@dataclass
class LoadedSystemMatrix:
    """A calibration read into memory once per worker (see ``imaging.cache``)."""

    system_matrix: np.ndarray  # (C, K, P) complex
    background: np.ndarray  # (C, K, E) complex
    snr: np.ndarray | None  # (C, K)
    frequencies_hz: np.ndarray  # (K,)
    size: tuple[int, int, int]
    fov_m: np.ndarray
    center_m: np.ndarray
    delta_concentration_mol_per_l: float


def load_system_matrix(path: str | Path) -> LoadedSystemMatrix:
    with open_mdf(path) as f:
        s, bg = f.system_matrix()
        snr = None if f.snr is None else np.asarray(f.snr, dtype=float)[0]
        if f.calibration_size is None or f.tracer_concentration_mol_per_l is None:
            raise ValueError(f"{path}: a system matrix needs /calibration/size and /tracer/concentration")
        return LoadedSystemMatrix(
            system_matrix=s,
            background=bg,
            snr=snr,
            frequencies_hz=np.asarray(f.frequencies_hz),
            size=cast("tuple[int, int, int]", tuple(int(v) for v in f.calibration_size)),
            fov_m=np.asarray(f.field_of_view_m, dtype=float),
            center_m=np.asarray(f.field_of_view_center_m, dtype=float),
            delta_concentration_mol_per_l=float(f.tracer_concentration_mol_per_l),
        )


def reconstruct(
    sm: LoadedSystemMatrix,
    measurement_path: str | Path,
    output_path: str | Path,
    params: ReconParams,
    *,
    progress: Progress,
    provenance: dict,
) -> dict:
    """Reconstruct a scan against a loaded (cached) system matrix with
    ``recon.pipeline.reconstruct_arrays`` and write the MDF reconstruction file."""
    from recon.mdf import write_reconstruction
    from recon.pipeline import reconstruct_arrays

    progress("read", 0.05)
    with open_mdf(measurement_path) as f:
        spectra = f.spectra()
        is_background = np.asarray(f.is_background_frame, dtype=bool)
        # A frequency-selected scan (a spectra stream's recording): rows among the stored frequencies.
        stored = f.available_frequencies if f.available_frequencies.size != f.num_frequencies else None
    stages = {"select": 0.15, "preprocess": 0.3, "solve": 0.5}
    result = reconstruct_arrays(
        sm.system_matrix,
        spectra,
        frequencies_hz=sm.frequencies_hz,
        size=sm.size,
        is_background_frame=is_background,
        snr=sm.snr,
        system_matrix_background=sm.background,
        delta_concentration_mol_per_l=sm.delta_concentration_mol_per_l,
        field_of_view_m=sm.fov_m,
        field_of_view_center_m=sm.center_m,
        params=params,
        measurement_frequencies=stored,
        progress=lambda stage, fraction: progress(stage, stages.get(stage, 0.5) + 0.4 * fraction * (stage == "solve")),
    )
    concentration = np.asarray(result.concentration_mol_per_l)
    if not np.all(np.isfinite(concentration)):
        raise ValueError("the reconstruction produced non-finite values")
    progress("write", 0.9)
    write_reconstruction(
        output_path,
        concentration[:, :, None],
        size=result.size,
        field_of_view_m=result.field_of_view_m,
        field_of_view_center_m=result.field_of_view_center_m,
        parameters={**result.parameters_record(), **provenance},
        unit="mol/L",
        extra_fields=result.extra_fields(),
    )
    progress("done", 1.0)
    return {
        "lambda_abs": float(result.lambda_abs),
        "rows": int(result.selection.get("num_rows", 0)),
        "frames": result.num_frames,
        "notes": list(result.notes),
        "timings_s": {k: float(v) for k, v in result.timings_s.items()},
    }


# --------------------------------------------------------------------------- quantification


@dataclass(frozen=True)
class RoiSpec:
    key: int  # RegionOfInterest id
    name: str
    kind: str
    geometry: dict | None
    label_path: str | None
    label_value: int | None


def _check_npy(path: str, max_bytes: int) -> None:
    """The array a .npy header declares must fit the limit and be exactly what the file holds."""
    from numpy.lib import format as npy_format

    with open(path, "rb") as fh:
        major, _ = npy_format.read_magic(fh)
        read_header = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        header_bytes = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"the .npy holds Python objects ({dtype}), not integers")
    declared = math.prod(int(n) for n in shape) * dtype.itemsize
    if declared > max_bytes:
        raise ValueError(
            f"the .npy declares {declared} bytes (shape {shape}, {dtype}), more than the limit of {max_bytes} bytes"
        )
    held = os.path.getsize(path) - header_bytes
    if held != declared:
        raise ValueError(f"the .npy declares {declared} bytes (shape {shape}, {dtype}) but holds {held}")


def load_labels(path: str) -> np.ndarray:
    """A label volume (.npy integer array or reconstruction-shaped MDF). Read in the web
    request that defines the ROI: what it declares is checked against
    ``IMAGING_LABEL_VOLUME_MAX_BYTES`` and against the file before anything is read."""
    max_bytes = settings.IMAGING_LABEL_VOLUME_MAX_BYTES
    if path.endswith(".npy"):
        _check_npy(path, max_bytes)
        return np.load(path, allow_pickle=False)
    with MDFFile(path, limits=read_limits(max_declared_bytes=max_bytes)) as f:
        data, _ = f.reconstruction()
    return np.rint(data[0, :, 0]).astype(np.int64)


@dataclass(frozen=True)
class LoadedVolume:
    values: np.ndarray  # (nz, ny, nx), mol Fe / L, mean over the reconstruction's frames
    grid: q.Grid


def load_volume(path: str | Path) -> LoadedVolume:
    """A stored reconstruction as one volume: the mean of its frames (a static subject,
    lower noise). Quantification, the viewer and the DICOM export all read it here."""
    with open_mdf(path) as f:
        grid, frames = q.reconstruction_frames(f)
    nx, ny, nz = grid.size
    return LoadedVolume(frames.mean(axis=0).reshape(nz, ny, nx), grid)


def label_mask(path: str, label_value: int, grid: q.Grid) -> np.ndarray | None:
    """(P,) bool: the voxels of a label volume holding ``label_value``; None when the
    label volume was drawn on another grid."""
    labels = load_labels(path)
    flat = labels.ravel(order="F") if labels.ndim == 3 else labels.ravel()
    return flat == label_value if flat.shape[0] == grid.num_voxels else None


def quantify(
    reconstruction_path: str | Path,
    rois: list[RoiSpec],
    *,
    injected_iron_ng: float,
    pg_fe_per_cell: float,
    system_matrix_path: str | Path | None = None,
) -> tuple[dict[int, dict], dict]:
    """Per-ROI iron, cells, retention (± its uncertainty) and off-target share, all
    computed by ``recon.quantify.quantify_reconstruction`` (the estimator the CLI runs)
    against ``injected_iron_ng`` (the scan's own injection); and the scan summary.
    With the calibration the image was reconstructed with (``system_matrix_path``) the
    region spread functions are exact (``recon.pipeline.region_spread``). What is
    returned is what is stored and shown."""
    with open_mdf(reconstruction_path) as f:
        stored = q.read_reconstruction(f)
    grid = stored.grid
    masks = []
    for roi in rois:
        signal = None
        if roi.geometry is not None:
            mask, signal = q.roi_masks_from_record(grid, roi.geometry)
        elif roi.label_path is not None and roi.label_value is not None:
            labelled = label_mask(roi.label_path, roi.label_value, grid)
            if labelled is None:
                raise ValueError(
                    f"the label volume of ROI {roi.name!r} is not on the reconstruction's grid "
                    f"{grid.size} ({grid.num_voxels} voxels)"
                )
            mask = labelled
        else:
            raise ValueError(f"ROI {roi.name!r} has neither a geometry nor a label volume")
        masks.append(q.Roi(str(roi.key), roi.kind, mask, signal))
    spread = bg_columns = None
    if system_matrix_path is not None:
        spread, bg_columns = q.exact_spread(stored, masks, system_matrix_path)
    result = q.quantify_reconstruction(
        stored,
        masks,
        spread=spread,
        background_columns=bg_columns,
        injected_iron_ng=injected_iron_ng,
        pg_fe_per_cell=pg_fe_per_cell,
    )
    per_roi = {}
    for roi, m in zip(rois, result.rois, strict=True):
        per_roi[roi.key] = {
            "iron_ng": m.iron_mass_ng,
            "uncertainty_ng": m.uncertainty_ng,
            "cell_count": m.cell_count or 0.0,
            "retention_percent": m.retention_percent,
            "retention_uncertainty_percent": m.retention_uncertainty_percent,
            "off_target_percent": m.off_target_percent,
            "detection_limit_ng": m.detection_limit_ng,
            "detected": m.detected,
            "voxels": m.num_voxels,
        }
    summary = {
        "injected_iron_ng": injected_iron_ng,
        "retention_percent": result.retention_percent,
        "retention_uncertainty_percent": result.retention_uncertainty_percent,
        "off_target_percent": result.off_target_percent,
        "total_detected_iron_ng": result.total_detected_iron_ng,
        "background_level_mol_per_l": result.background_level_mol_per_l,
        "noise_sd_mol_per_l": result.noise_sd_mol_per_l,
        "notes": list(result.notes),
    }
    return per_roi, json.loads(json.dumps(summary))
