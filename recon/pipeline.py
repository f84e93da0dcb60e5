"""End-to-end reconstruction: calibration + scan → iron concentration image.

Two entry points share every numerical step:

- :func:`reconstruct_arrays` takes plain arrays (system matrix C×K×P, scan
  spectra N×C×K, …);
- :func:`reconstruct_file` reads MDF files (only the selected frequency
  rows), calls the same row selection and preprocessing, and writes an MDF
  reconstruction with the full plan and the inputs' SHA-256 checksums, so the
  image can be reproduced.

Output unit: mol Fe / L. The solver returns x in units of the delta sample
(x = 1: the voxel holds the calibration's delta-sample concentration), so
c = x · ``/tracer/concentration`` of the calibration. This assumes, as
MPIReco does, that the delta sample fills one voxel (the simulator's does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

import recon
from recon import inputs, preprocess, solvers
from recon.budget import RowBudget, row_budget
from recon.checksum import sha256_file
from recon.operator import ReconOperator, cache_key
from recon.params import ReconParams

ProgressCallback = Callable[[str, float], None]
#: Frames solved per batch (bounds memory; progress is reported per batch).
FRAME_BATCH = 64


@dataclass(frozen=True)
class ReconstructionResult:
    """A reconstruction and how it was made.

    concentration_mol_per_l : (Q, P) float (params.dtype), voxels x fastest — the
        display image (positivity applied when asked)
    linear_frames_mol_per_l : (Q, P) — the linear (unclamped) frames that
        quantification integrates (stored as ``/reconstruction/_linearFrames``)
    resolution_fwhm_m : (3,) m — the reconstruction's resolution (stored in
        ``_parameters``; the point-spread of the region estimator)
    size : (nx, ny, nz); field_of_view_m, field_of_view_center_m : (3,) m
    frame_groups : Q lists of the file frame indices averaged into each frame
    """

    concentration_mol_per_l: np.ndarray
    linear_frames_mol_per_l: np.ndarray
    resolution_fwhm_m: tuple[float, float, float]
    size: tuple[int, int, int]
    field_of_view_m: tuple[float, float, float]
    field_of_view_center_m: tuple[float, float, float]
    params: ReconParams
    lambda_abs: float
    delta_concentration_mol_per_l: float
    selection: dict
    frame_groups: list
    notes: tuple[str, ...] = ()
    timings_s: dict = field(default_factory=dict)
    input_checksums: dict = field(default_factory=dict)
    output_path: str | None = None
    row_weights: list | None = None
    background_rows: np.ndarray | None = None
    background_noise_factor: float = 1.0
    calibration_tf_divided: bool = False

    @property
    def num_frames(self) -> int:
        return int(self.concentration_mol_per_l.shape[0])

    def volume(self, frame: int = 0) -> np.ndarray:
        """(nx, ny, nz) image of one frame, indexed [ix, iy, iz]."""
        return self.concentration_mol_per_l[frame].reshape(self.size, order="F")

    def as_dict(self) -> dict:
        """JSON-compatible summary (no voxel data): shape, grid, plan, timings."""
        return {
            "output": self.output_path,
            "frames": self.num_frames,
            "size": list(self.size),
            "field_of_view_m": list(self.field_of_view_m),
            "field_of_view_center_m": list(self.field_of_view_center_m),
            "max_concentration_mol_per_l": float(np.max(self.concentration_mol_per_l)),
            "timings_s": dict(self.timings_s),
            **self.parameters_record(),
        }

    def parameters_record(self) -> dict:
        """The JSON record stored in ``/reconstruction/_parameters``."""
        return {
            "params": self.params.as_dict(),
            "lambda_abs": self.lambda_abs,
            "lambda_normalisation": "lambda_abs = lambda_ * trace(S^H S) / P (selected, weighted rows)",
            "delta_concentration_mol_per_l": self.delta_concentration_mol_per_l,
            "selection": self.selection,
            "frame_groups": [[int(i) for i in g] for g in self.frame_groups],
            "resolution_fwhm_m": list(self.resolution_fwhm_m),
            "background_noise_factor": self.background_noise_factor,
            "calibration_transfer_function_divided": self.calibration_tf_divided,
            "row_weights": self.row_weights,
            "resolution_method": "Gaussian fitted to linear reconstructions of calibration columns (point sources)",
            "inputs": self.input_checksums,
            "notes": list(self.notes),
            "software": software_versions(),
        }

    def extra_fields(self) -> dict:
        """Datasets written beside ``/reconstruction/data``: the linear frames."""
        from recon.quantify import BACKGROUND_ROWS_FIELD, LINEAR_FRAMES_FIELD

        fields = {LINEAR_FRAMES_FIELD: np.asarray(self.linear_frames_mol_per_l, dtype=np.float32)}
        if self.background_rows is not None:
            fields[BACKGROUND_ROWS_FIELD] = np.stack([self.background_rows.real, self.background_rows.imag])
        return fields


def _background_rows(
    measurement_rows: np.ndarray,
    is_background: np.ndarray,
    external_rows: np.ndarray | None,
    sm_background_mean: np.ndarray | None,
    row_weights: np.ndarray,
    tf_plan: preprocess.TransferFunctionPlan,
) -> np.ndarray | None:
    """(M,) complex: the scanner background spectrum in the prepared row space (mean of the
    scan's background frames, else of the empty-bore scan, else of the calibration's
    empty-bore frames), transfer-function corrected and weighted like the measurement.
    Background drift scales this spectrum, so what background correction leaves behind is
    close to a complex multiple of it; the region estimator fits that multiple jointly
    (``recon.quantify``, background columns)."""
    bg = np.asarray(is_background, dtype=bool)
    if bg.any():
        mean = np.asarray(measurement_rows)[bg].mean(axis=0)
        divisor = tf_plan.measurement_divisor
    elif external_rows is not None and len(external_rows):
        mean = np.asarray(external_rows).mean(axis=0)
        divisor = tf_plan.measurement_divisor
    elif sm_background_mean is not None:
        mean = np.asarray(sm_background_mean)
        divisor = tf_plan.calibration_divisor
    else:
        return None
    if divisor is not None:
        mean = mean / divisor
    return np.asarray(mean * row_weights, dtype=np.complex128)


def _mean_background(rows: np.ndarray | None) -> np.ndarray | None:
    """(M,) the mean over the calibration's empty-bore frames of (M, B) rows; None without any."""
    if rows is None or np.shape(rows)[-1] == 0:
        return None
    return np.asarray(rows).mean(axis=-1)


def background_noise_factor(
    is_background: np.ndarray, frame_groups: list, params: ReconParams, num_external_frames: int = 0
) -> float:
    """1 + N_fg · Σ_b c_b²: how much the noise of background correction adds to the variance
    of the mean over the N_fg foreground frames, c_b being the weight of background frame b
    in the mean background that was subtracted. The frame-to-frame scatter of the
    quantitative frames cannot see this term (it is common to every frame), so
    ``recon.quantify`` multiplies the scatter variance by it. Frames are taken to have equal
    noise; background correction is linear, so c is found by applying it to unit frames."""
    fg = np.concatenate([np.asarray(g, dtype=np.int64) for g in frame_groups])
    if params.background == "none":
        return 1.0
    if params.background_is_external:
        return 1.0 + fg.size / max(num_external_frames, 1)
    bg_idx = np.flatnonzero(is_background)
    if bg_idx.size == 0:
        return 1.0
    unit = np.zeros((is_background.shape[0], bg_idx.size))
    unit[bg_idx, np.arange(bg_idx.size)] = 1.0
    coeff = preprocess.background_estimate(unit, np.asarray(is_background, bool), fg, params.background).mean(axis=0)
    return float(1.0 + fg.size * np.sum(coeff**2))


def _recorded_weights(row_weights: np.ndarray, params: ReconParams) -> list | None:
    """Row weights that depend on the scan (whitening) are recorded so the region
    spread can be rebuilt from the calibration alone."""
    return [float(w) for w in row_weights] if params.weighting == "whiten" else None


def _resolution_m(fwhm_vox: np.ndarray, size, fov) -> tuple[float, float, float]:
    """FWHM measured in voxels → m."""
    vox = np.asarray(fov, dtype=np.float64) / np.asarray(size)
    return cast("tuple[float, float, float]", tuple(float(v) for v in np.asarray(fwhm_vox) * vox))


def software_versions() -> dict:
    import numba
    import scipy

    return {"recon": recon.__version__, "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__}


def _report(progress: ProgressCallback | None, stage: str, fraction: float) -> None:
    if progress is not None:
        progress(stage, float(min(max(fraction, 0.0), 1.0)))


def _vector3(values) -> tuple[float, float, float]:
    """An MDF (3,) vector (field of view, centre) as a tuple of floats."""
    return cast("tuple[float, float, float]", tuple(float(v) for v in np.ravel(values)))


def _check_grid(size, num_voxels: int) -> tuple[int, int, int]:
    checked = tuple(int(s) for s in size)
    if len(checked) != 3 or min(checked) < 1:
        raise ValueError(f"size needs 3 positive entries (x, y, z), got {checked}")
    if int(np.prod(checked)) != num_voxels:
        raise ValueError(f"size {checked} holds {int(np.prod(checked))} voxels, the system matrix has {num_voxels}")
    nx, ny, nz = checked
    return nx, ny, nz


#: Solvers whose output (without positivity) is a fixed linear map of the measurement.
LINEAR_SOLVERS = ("kaczmarz", "fast")


@dataclass(frozen=True)
class SolvedFrames:
    """The frames of one reconstruction.

    linear : (Q, P) — the linear (unclamped) reconstruction of every frame: the
        quantitative image. Frames are combined (averaged) only linearly, so the
        mean of these is the reconstruction of the mean measurement and no iron
        is lost at low dose; this is what ``recon.quantify`` integrates.
    display : (Q, P) — what is shown: ``params.solver``'s own output with its
        constraints (positivity), frame by frame; never used for quantification.
    resolution_fwhm_m : (3,) — FWHM of the Gaussian fitted to the linear
        reconstructions of calibration columns (point sources) at a few voxels.
    """

    linear: np.ndarray
    display: np.ndarray
    lambda_abs: float
    resolution_fwhm_m: np.ndarray
    notes: tuple[str, ...]


def _probe_voxels(size) -> np.ndarray:
    """Voxel indices of the resolution probes: the centre and ±¼ field of view on each imaged axis."""
    centre = [s // 2 for s in size]
    probes = [tuple(centre)]
    for a in range(3):
        if size[a] > 1:
            for off in (-size[a] // 4, size[a] // 4):
                idx = list(centre)
                idx[a] = min(max(centre[a] + off, 0), size[a] - 1)
                probes.append(tuple(idx))
    flat = [int(np.ravel_multi_index(p, size, order="F")) for p in probes]
    return np.array(sorted(set(flat)))


def _solve_rows(prep: preprocess.PreparedRows, params: ReconParams, size, progress) -> SolvedFrames:
    a, y = solvers.stack_real(prep.system_matrix, prep.measurements, params.dtype)
    return _solve_stacked(a, y, params, size, progress)


def _solve_stacked(
    a: np.ndarray, y: np.ndarray, params: ReconParams, size, progress, operator_source=None
) -> SolvedFrames:
    """Solve the real-stacked problem A x = y (A: 2M × P, y: Q × 2M) frame batch by batch:
    the linear frames (quantification), the display frames (the solver's own constraint)
    and the resolution probes.

    ``operator_source(a, lam) -> ReconOperator`` (the fast solver only) may load a cached
    operator or build it in place of ``a`` (so ``a`` is not read after it)."""
    lam = solvers.absolute_lambda(a, params.lambda_)
    _report(progress, "solve", 0.0)
    probes = _probe_voxels(size)
    probe_columns = np.ascontiguousarray(a[:, probes].T)  # read before an in-place operator build
    num_voxels = a.shape[1]
    notes = []
    solve_display = None
    if params.solver == "fast" and operator_source is not None:
        op = operator_source(a, lam)
        solve = solvers.fast_solver(op, positivity=False)
        if params.positivity:
            solve_display = solvers.fast_solver(op, positivity=True)
    else:
        if params.solver in LINEAR_SOLVERS:
            linear_params = params.replace(positivity=False)
        else:
            linear_params = params.replace(solver="kaczmarz", positivity=False)
            notes.append(
                f"quantitative frames from linear Kaczmarz ({params.solver} is not linear): display from {params.solver}"
            )
        solve = solvers.make_solver(a, lam, linear_params, size)
        if params.positivity or params.solver not in LINEAR_SOLVERS:
            solve_display = solvers.make_solver(a, lam, params, size)
    x = np.empty((y.shape[0], num_voxels), dtype=probe_columns.dtype)
    for start in range(0, y.shape[0], FRAME_BATCH):
        stop = min(start + FRAME_BATCH, y.shape[0])
        x[start:stop] = solve(y[start:stop])
        _report(progress, "solve", stop / y.shape[0])
    if solve_display is not None:
        # The display keeps the solver's own constraint (a better image); it never feeds quantification.
        display = np.empty_like(x)
        for start in range(0, y.shape[0], FRAME_BATCH):
            stop = min(start + FRAME_BATCH, y.shape[0])
            display[start:stop] = solve_display(y[start:stop])
        notes.append("display image from the constrained solver; quantification uses the linear frames")
    else:
        display = x
    psf = solve(probe_columns)
    from recon.quantify import Grid, resolution_from_point_spreads

    unit_grid = Grid(size, (float(size[0]), float(size[1]), float(size[2])))  # 1-voxel units
    fwhm_vox = resolution_from_point_spreads(unit_grid, psf, probes)
    return SolvedFrames(x, display, lam, fwhm_vox, tuple(notes))


def select_rows_within_budget(
    snr: np.ndarray | None,
    frequencies_hz: np.ndarray,
    params: ReconParams,
    num_channels: int,
    num_voxels: int,
    *,
    available: np.ndarray | None = None,
) -> tuple[preprocess.RowSelection, RowBudget]:
    """Rows by SNR (:func:`recon.preprocess.select_rows`) capped by the plan's
    ``max_rows`` or, when it has none, by the default budget of
    :func:`recon.budget.row_budget` (memory available and voxels)."""
    budget = row_budget(num_voxels, params.max_rows, params.memory_budget_bytes)
    capped = params if params.max_rows is not None else params.replace(max_rows=budget.max_rows)
    return preprocess.select_rows(snr, frequencies_hz, capped, num_channels, available=available), budget


def _selection_record(selection: preprocess.RowSelection, budget: RowBudget) -> dict:
    return {**selection.as_dict(), "budget": budget.as_dict()}


def reconstruct_arrays(
    system_matrix: np.ndarray,
    measurement_spectra: np.ndarray,
    *,
    frequencies_hz: np.ndarray,
    size: tuple[int, int, int],
    is_background_frame: np.ndarray | None = None,
    snr: np.ndarray | None = None,
    system_matrix_background: np.ndarray | None = None,
    delta_concentration_mol_per_l: float = 1.0,
    field_of_view_m=(1.0, 1.0, 1.0),
    field_of_view_center_m=(0.0, 0.0, 0.0),
    params: ReconParams | None = None,
    external_background_spectra: np.ndarray | None = None,
    system_matrix_transfer_function: np.ndarray | None = None,
    measurement_transfer_function: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    system_matrix_transfer_function_corrected: bool = False,
    measurement_transfer_function_corrected: bool = False,
    measurement_frequencies: np.ndarray | None = None,
) -> ReconstructionResult:
    """Reconstruct from plain arrays.

    Parameters
    ----------
    system_matrix : (C, K, P) complex — foreground calibration frames, voxels x fastest
    measurement_spectra : (N, C, K) or (N, J, C, K) complex — rfft of each
        frame's V samples (period 0 is used when J > 1)
    frequencies_hz : (K,) float
    size : (nx, ny, nz) with nx·ny·nz = P
    is_background_frame : (N,) bool or None (None = no background frames)
    snr : (C, K) float or None — calibration SNR; None = computed from
        ``system_matrix_background`` when it has ≥ 2 frames, else no threshold
    system_matrix_background : (C, K, E) complex or None
    delta_concentration_mol_per_l : float — concentration of the delta sample
    field_of_view_m, field_of_view_center_m : (3,) m — carried into the result
    params : ReconParams (default ``ReconParams()``); a background *path* is
        not read here: pass ``external_background_spectra`` (N_e, C, K)
    system_matrix_transfer_function, measurement_transfer_function : (C, K) complex or None
    system_matrix_transfer_function_corrected, measurement_transfer_function_corrected : bool
        Whether that data is already divided by its transfer function; see
        :func:`recon.preprocess.transfer_function_plan` for the rule.
    measurement_frequencies : (K_sel,) int or None
        A frequency-selected scan (``MDFFile.available_frequencies``): the indices into
        the K axis of the last axis of ``measurement_spectra`` (N, [J,] C, K_sel). Rows
        are then chosen among these frequencies only (as ``reconstruct_file`` does with
        the frequencies both files store). None: the scan holds all K.

    Returns
    -------
    ReconstructionResult with concentration (Q, P) in mol Fe / L.
    """
    params = ReconParams() if params is None else params
    t0 = time.perf_counter()
    s = np.asarray(system_matrix)
    if s.ndim != 3:
        raise ValueError(f"system_matrix must be (C, K, P), got shape {s.shape}")
    c, k, p = s.shape
    u = np.asarray(measurement_spectra)
    if u.ndim == 4:
        u = u[:, 0]
    available = None
    if measurement_frequencies is not None:
        stored = np.asarray(measurement_frequencies, dtype=np.int64).reshape(-1)
        if (
            u.ndim != 3
            or u.shape[-1] != stored.size
            or stored.size == 0
            or stored.min() < 0
            or stored.max() >= k
            or np.unique(stored).size != stored.size
        ):
            raise ValueError(
                f"measurement_frequencies must be {u.shape[-1] if u.ndim == 3 else '?'} distinct indices "
                f"into the {k} frequencies, matching measurement_spectra {np.shape(measurement_spectra)}"
            )
        full = np.zeros((u.shape[0], u.shape[1], k), dtype=np.result_type(u.dtype, np.complex64))
        full[..., stored] = u  # rows at the other frequencies are never selected
        u = full
        available = np.zeros(k, dtype=bool)
        available[stored] = True
    if u.ndim != 3 or u.shape[1:] != (c, k):
        raise ValueError(
            f"measurement_spectra has shape {np.shape(measurement_spectra)}, expected (N, {c}, {k}) "
            f"or (N, J, {c}, {k}) to match the system matrix {s.shape}"
        )
    freqs = np.asarray(frequencies_hz, dtype=np.float64)
    if freqs.shape != (k,):
        raise ValueError(f"frequencies_hz has shape {freqs.shape}, expected ({k},)")
    size = _check_grid(size, p)
    if not np.isfinite(delta_concentration_mol_per_l) or delta_concentration_mol_per_l <= 0:
        raise ValueError(f"delta_concentration_mol_per_l must be > 0, got {delta_concentration_mol_per_l}")
    is_bg = np.zeros(u.shape[0], dtype=bool) if is_background_frame is None else np.asarray(is_background_frame, bool)
    bg = None if system_matrix_background is None else np.asarray(system_matrix_background)
    if bg is not None and (bg.ndim != 3 or bg.shape[:2] != (c, k)):
        raise ValueError(f"system_matrix_background has shape {bg.shape}, expected ({c}, {k}, E)")
    if snr is None and bg is not None and bg.shape[-1] >= 2:
        from recon.simulate import calibration_snr

        snr = calibration_snr(s, bg)
    if params.background_is_external and external_background_spectra is None:
        raise ValueError(f"background={params.background!r} is a file: pass external_background_spectra")
    _report(progress, "select", 0.0)
    selection, budget = select_rows_within_budget(snr, freqs, params, c, p, available=available)
    ext = None
    if external_background_spectra is not None and params.background_is_external:
        ext_arr = np.asarray(external_background_spectra)
        ext = preprocess.gather_rows(ext_arr[:, 0] if ext_arr.ndim == 4 else ext_arr, selection)

    def tf_rows(tf):
        return None if tf is None else np.asarray(tf)[selection.channel, selection.frequency]

    _report(progress, "preprocess", 0.0)
    prep = preprocess.prepare_rows(
        s[selection.channel, selection.frequency],
        None if bg is None else bg[selection.channel, selection.frequency],
        preprocess.gather_rows(u, selection),
        is_bg,
        selection,
        params,
        external_background_rows=ext,
        sm_transfer_function_rows=tf_rows(system_matrix_transfer_function),
        measurement_transfer_function_rows=tf_rows(measurement_transfer_function),
        sm_transfer_function_corrected=system_matrix_transfer_function_corrected,
        measurement_transfer_function_corrected=measurement_transfer_function_corrected,
    )
    tf_plan = preprocess.transfer_function_plan(
        tf_rows(system_matrix_transfer_function),
        system_matrix_transfer_function_corrected,
        tf_rows(measurement_transfer_function),
        measurement_transfer_function_corrected,
    )
    bg_rows = _background_rows(
        preprocess.gather_rows(u, selection),
        is_bg,
        ext,
        _mean_background(None if bg is None else bg[selection.channel, selection.frequency]),
        prep.row_weights,
        tf_plan,
    )
    t1 = time.perf_counter()
    solved = _solve_rows(prep, params, size, progress)
    t2 = time.perf_counter()
    fov = _vector3(field_of_view_m)
    return ReconstructionResult(
        concentration_mol_per_l=solved.display * solved.display.dtype.type(delta_concentration_mol_per_l),
        linear_frames_mol_per_l=solved.linear * solved.linear.dtype.type(delta_concentration_mol_per_l),
        resolution_fwhm_m=_resolution_m(solved.resolution_fwhm_m, size, fov),
        size=size,
        field_of_view_m=fov,
        field_of_view_center_m=_vector3(field_of_view_center_m),
        params=params,
        lambda_abs=solved.lambda_abs,
        delta_concentration_mol_per_l=float(delta_concentration_mol_per_l),
        selection=_selection_record(selection, budget),
        frame_groups=[g.tolist() for g in prep.frame_groups],
        row_weights=_recorded_weights(prep.row_weights, params),
        calibration_tf_divided=tf_plan.calibration_divisor is not None,
        background_rows=bg_rows,
        background_noise_factor=background_noise_factor(
            is_bg, prep.frame_groups, params, 0 if ext is None else int(ext.shape[0])
        ),
        notes=tuple(prep.notes) + solved.notes,
        timings_s={"preprocess": t1 - t0, "solve": t2 - t1},
    )


def reconstruct_file(
    system_matrix_path: str | os.PathLike,
    measurement_path: str | os.PathLike,
    output_path: str | os.PathLike | None,
    params: ReconParams | None = None,
    progress: ProgressCallback | None = None,
    operator_cache_dir: str | os.PathLike | None = None,
) -> ReconstructionResult:
    """Reconstruct an MDF scan with an MDF calibration and write the image.

    Reads only the selected (channel, frequency) rows of both files, block by
    block, straight into the float32 real-stacked matrix (no complex128 copy
    of the whole selection), so the peak stays within twice that matrix plus
    the solver's row-space work (see :mod:`recon.budget`); writes
    ``output_path`` (skipped when None) with ``write_reconstruction``:
    ``/reconstruction/data`` (Q×P×1, mol Fe / L, x fastest), size, field of
    view and centre from the calibration, and ``_parameters`` = the plan, λ_abs,
    selected rows, frame groups, SHA-256 of the inputs and software versions.

    ``progress(stage, fraction)`` is called with stages "read", "select",
    "preprocess", "solve" and "write".

    ``operator_cache_dir``: with ``solver="fast"``, the reconstruction
    operator is loaded from (or built and saved to) this folder under
    :func:`recon.operator.cache_key` (calibration SHA-256, λ, rows, weights).
    """
    from recon.mdf import MDFFile, write_reconstruction

    params = ReconParams() if params is None else params
    t0 = time.perf_counter()
    _report(progress, "read", 0.0)
    checksums = {
        "system_matrix": {"path": os.fspath(system_matrix_path), "sha256": sha256_file(system_matrix_path)},
        "measurement": {"path": os.fspath(measurement_path), "sha256": sha256_file(measurement_path)},
    }
    with MDFFile(system_matrix_path) as smf, MDFFile(measurement_path) as mf:
        plan = inputs.check_pair(smf, mf, params)
        size, fov, center = plan.size, plan.field_of_view_m, plan.field_of_view_center_m
        delta = plan.delta_concentration_mol_per_l
        freqs = np.asarray(smf.frequencies_hz, dtype=np.float64)
        c = smf.num_receive_channels
        snr = plan.snr
        notes = list(plan.notes)
        if snr is None:
            # Without a stored SNR, compute it from the background frames.
            snr = _calibration_snr_in_blocks(smf, int(np.prod(size)))
            notes.append(
                "calibration SNR computed from its background frames"
                if snr is not None
                else "calibration has no SNR and < 2 background frames: no SNR threshold"
            )
        _report(progress, "select", 0.0)
        size_p = int(np.prod(size))
        selection, budget = select_rows_within_budget(snr, freqs, params, c, size_p, available=plan.available)
        union, col = np.unique(selection.frequency, return_inverse=True)
        if mf.num_periods > 1:
            notes.append(f"scan has {mf.num_periods} periods per frame: period 0 used")
        # The scan's selected rows (frames × rows) are small; the calibration's are not.
        u_sub = mf.spectra(frequencies=union, periods=[0])[:, 0]
        meas_rows = u_sub[:, selection.channel, col]
        del u_sub
        is_bg = np.asarray(mf.is_background_frame, dtype=bool)
        tf_s = smf.transfer_function
        tf_u = mf.transfer_function
        tf_s_corrected = smf.layout["isTransferFunctionCorrected"]
        tf_u_corrected = mf.layout["isTransferFunctionCorrected"]
        ext_rows = None
        if params.background_is_external:
            checksums["background"] = {"path": params.background, "sha256": sha256_file(params.background)}
            with MDFFile(params.background) as bf:
                inputs.check_compatible(smf, bf, "empty-bore scan")
                ext_rows = bf.spectra(frequencies=union, periods=[0])[:, 0][:, selection.channel, col]
        a, y, groups, row_weights, prep_notes, sm_bg_mean = _stack_rows_from_calibration(
            smf,
            selection,
            meas_rows,
            is_bg,
            params,
            size_p,
            ext_rows,
            None if tf_s is None else tf_s[selection.channel, selection.frequency],
            None if tf_u is None else tf_u[selection.channel, selection.frequency],
            (tf_s_corrected, tf_u_corrected),
            progress,
        )
    _report(progress, "read", 1.0)
    t1 = time.perf_counter()
    tf_plan = preprocess.transfer_function_plan(
        None if tf_s is None else tf_s[selection.channel, selection.frequency],
        tf_s_corrected,
        None if tf_u is None else tf_u[selection.channel, selection.frequency],
        tf_u_corrected,
    )
    bg_rows = _background_rows(meas_rows, is_bg, ext_rows, sm_bg_mean, row_weights, tf_plan)
    operator_source = _build_in_place
    if operator_cache_dir is not None:
        key_inputs = {
            "system_matrix_sha256": checksums["system_matrix"]["sha256"],
            "params": params.as_dict(),
            "channel": selection.channel,
            "frequency": selection.frequency,
            "row_weights": row_weights,
            "extra": {"transfer_functions": [tf_s is not None, tf_u is not None, tf_s_corrected, tf_u_corrected]},
        }
        operator_source = _cached_operator_source(operator_cache_dir, key_inputs, notes)
    solved = _solve_stacked(a, y, params, size, progress, operator_source)
    del a
    t2 = time.perf_counter()
    result = ReconstructionResult(
        concentration_mol_per_l=solved.display * solved.display.dtype.type(delta),
        linear_frames_mol_per_l=solved.linear * solved.linear.dtype.type(delta),
        resolution_fwhm_m=_resolution_m(solved.resolution_fwhm_m, size, _vector3(fov)),
        size=size,
        field_of_view_m=_vector3(fov),
        field_of_view_center_m=_vector3(center),
        params=params,
        lambda_abs=solved.lambda_abs,
        delta_concentration_mol_per_l=float(delta),
        selection=_selection_record(selection, budget),
        frame_groups=[g.tolist() for g in groups],
        row_weights=_recorded_weights(row_weights, params),
        calibration_tf_divided=tf_plan.calibration_divisor is not None,
        background_rows=bg_rows,
        background_noise_factor=background_noise_factor(
            is_bg, groups, params, 0 if ext_rows is None else int(ext_rows.shape[0])
        ),
        notes=tuple(notes + prep_notes) + solved.notes,
        timings_s={"read_preprocess": t1 - t0, "solve": t2 - t1},
        input_checksums=checksums,
        output_path=None if output_path is None else os.fspath(output_path),
    )
    if output_path is not None:
        _report(progress, "write", 0.0)
        write_reconstruction(
            output_path,
            result.concentration_mol_per_l[:, :, None],
            size=size,
            field_of_view_m=result.field_of_view_m,
            field_of_view_center_m=result.field_of_view_center_m,
            parameters=result.parameters_record(),
            unit="mol/L",
            order="xyz",
            extra_fields=result.extra_fields(),
        )
    _report(progress, "write", 1.0)
    return result


#: Bytes of complex128 calibration rows prepared per block (also held below 1/16 of the matrix).
ROW_BLOCK_BYTES = 32 * 2**20


def _stack_rows_from_calibration(
    smf, selection, meas_rows, is_bg, params, num_voxels, ext_rows, tf_s_rows, tf_u_rows, tf_corrected, progress
):
    """A (2M × P, ``params.dtype``) and y (Q × 2M) from the calibration's selected rows.

    The rows are read (only those rows, per receive channel), background- and
    transfer-function-corrected and weighted by :func:`recon.preprocess.prepare_rows`
    one block at a time (every step there acts row by row), and written into
    the real-stacked matrix; the whole selection never exists as complex128.
    Returns (a, y, frame_groups, row_weights, notes, sm_background_mean): the last is the
    (M,) mean of the calibration's empty-bore frames per selected row (None without any),
    before any correction, for the background model of ``recon.quantify``.
    """
    m = selection.num_rows
    dtype = np.dtype(params.dtype)
    a = np.empty((2 * m, num_voxels), dtype=dtype)
    per_row = 16 * num_voxels
    block = max(1, min(ROW_BLOCK_BYTES, a.nbytes // 16) // per_row)
    y = None
    weights = np.empty(m)
    sm_bg_mean: np.ndarray | None = None
    groups: list = []
    notes: list = []
    for start in range(0, m, block):
        stop = min(start + block, m)
        rows = slice(start, stop)
        ch, fr = selection.channel[rows], selection.frequency[rows]
        s_parts, b_parts = [], []
        for channel in np.unique(ch):
            mine = ch == channel
            s_c, b_c = smf.system_matrix(frequencies=fr[mine], channels=[int(channel)])
            s_parts.append(s_c[0])
            b_parts.append(b_c[0])
        s_blk = np.concatenate(s_parts) if len(s_parts) > 1 else s_parts[0]
        b_blk = np.concatenate(b_parts) if len(b_parts) > 1 else b_parts[0]
        del s_parts, b_parts
        sub = preprocess.RowSelection(ch, fr, selection.frequency_hz[rows], selection.snr[rows], selection.candidates)
        prep = preprocess.prepare_rows(
            s_blk,
            b_blk,
            meas_rows[:, rows],
            is_bg,
            sub,
            params,
            external_background_rows=None if ext_rows is None else ext_rows[:, rows],
            sm_transfer_function_rows=None if tf_s_rows is None else tf_s_rows[rows],
            measurement_transfer_function_rows=None if tf_u_rows is None else tf_u_rows[rows],
            sm_transfer_function_corrected=tf_corrected[0],
            measurement_transfer_function_corrected=tf_corrected[1],
        )
        if b_blk.shape[-1] > 0:
            if sm_bg_mean is None:
                sm_bg_mean = np.empty(m, dtype=np.complex128)
            sm_bg_mean[start:stop] = b_blk.mean(axis=-1)
        del s_blk, b_blk
        a[start:stop] = prep.system_matrix.real
        a[m + start : m + stop] = prep.system_matrix.imag
        if y is None:
            y = np.empty((prep.measurements.shape[0], 2 * m), dtype=dtype)
            groups, notes = prep.frame_groups, prep.notes
        y[:, start:stop] = prep.measurements.real
        y[:, m + start : m + stop] = prep.measurements.imag
        weights[rows] = prep.row_weights
        del prep
        _report(progress, "preprocess", stop / m)
    if y is None:  # pragma: no cover - select_rows never returns an empty selection
        raise ValueError("no rows selected")
    return a, y, groups, weights, notes, sm_bg_mean


def _calibration_snr_in_blocks(smf, num_voxels: int) -> np.ndarray | None:
    """:func:`recon.simulate.calibration_snr` over the stored frequencies, read a
    block of frequencies at a time (never the whole matrix at once); None with
    fewer than 2 background frames."""
    from recon.simulate import calibration_snr

    if int(np.count_nonzero(smf.is_background_frame)) < 2:
        return None
    freqs = smf.available_frequencies
    c = smf.num_receive_channels
    snr = np.empty((c, freqs.size))
    step = max(1, ROW_BLOCK_BYTES // (16 * c * max(num_voxels, 1)))
    for start in range(0, freqs.size, step):
        s_blk, bg_blk = smf.system_matrix(frequencies=freqs[start : start + step])
        snr[:, start : start + step] = calibration_snr(s_blk, bg_blk)
    return inputs.full_axis_snr(smf, snr)


def _build_in_place(a: np.ndarray, lam: float) -> ReconOperator:
    return ReconOperator.build(a, lam, overwrite_a=True)


def _cached_operator_source(cache_dir, key_inputs: dict, notes: list):
    """``source(a, lam)``: the cached operator for this key, else built in place of ``a`` and saved."""

    def source(a: np.ndarray, lam: float) -> ReconOperator:
        key = cache_key(lambda_abs=lam, **key_inputs)
        op = ReconOperator.load(cache_dir, key)
        if op is not None:
            notes.append(f"reconstruction operator loaded from cache {key[:12]}")
            return op
        op = ReconOperator.build(a, lam, overwrite_a=True, key=key)
        op.save(cache_dir, key)
        notes.append(f"reconstruction operator built and cached as {key[:12]}")
        return op

    return source


def load_arrays(system_matrix_path, measurement_path) -> dict:
    """Read both MDF files in full into the keyword arguments of
    :func:`reconstruct_arrays` (for small problems and for tests that prove
    the file and array paths agree).

    Frequencies are those both files store (all K unless one holds a
    frequency selection); transfer functions and their flags are passed on, so
    the array path applies the same rule as the file path."""
    from recon.mdf import MDFFile

    with MDFFile(system_matrix_path) as smf, MDFFile(measurement_path) as mf:
        inputs.check_calibration(smf)
        common = np.intersect1d(smf.available_frequencies, mf.available_frequencies)
        s, bg = smf.system_matrix(frequencies=common)
        snr = inputs.full_axis_snr(smf)

        def tf(f):
            return None if f.transfer_function is None else f.transfer_function[:, common]

        return {
            "system_matrix": s,
            "system_matrix_background": bg,
            "snr": None if snr is None else snr[:, common],
            "frequencies_hz": np.asarray(smf.frequencies_hz)[common],
            "size": tuple(int(v) for v in smf.calibration_size or ()),
            "delta_concentration_mol_per_l": float(smf.tracer_concentration_mol_per_l or 0.0),
            "field_of_view_m": np.asarray(smf.field_of_view_m),
            "field_of_view_center_m": np.asarray(smf.field_of_view_center_m),
            "measurement_spectra": mf.spectra(frequencies=common, periods=[0])[:, 0],
            "is_background_frame": np.asarray(mf.is_background_frame, dtype=bool),
            "system_matrix_transfer_function": tf(smf),
            "measurement_transfer_function": tf(mf),
            "system_matrix_transfer_function_corrected": smf.layout["isTransferFunctionCorrected"],
            "measurement_transfer_function_corrected": mf.layout["isTransferFunctionCorrected"],
        }


def region_spread_arrays(
    system_matrix_rows: np.ndarray,
    masks: np.ndarray,
    params: ReconParams,
    lambda_abs: float,
    size,
) -> np.ndarray:
    """(R, P) exact region spread functions R·S·χ_j: each ROI's noise-free signal
    (the prepared, weighted system-matrix rows times its voxel fractions, one unit
    of the delta sample's concentration per voxel) reconstructed by the same linear
    operator and λ as the quantitative frames. These are the columns of the GTM
    (``recon.quantify.region_model``): an image c (mol/L) of a region at uniform
    concentration a_j is a_j · spread_j.

    system_matrix_rows : (M, P) complex, prepared as for the reconstruction
    masks : (R, P) float voxel fractions
    """
    a = solvers.stack_real(system_matrix_rows, None, params.dtype)
    linear = (
        params.replace(positivity=False)
        if params.solver in LINEAR_SOLVERS
        else params.replace(solver="kaczmarz", positivity=False)
    )
    chi = np.asarray(masks, dtype=a.dtype)
    if chi.ndim != 2 or chi.shape[1] != a.shape[1]:
        raise ValueError(f"masks have shape {chi.shape}, expected (R, {a.shape[1]})")
    from recon.quantify import canonical_order

    order = canonical_order(chi)  # solve in a canonical order: the same numbers whatever the ROIs' order
    y = np.ascontiguousarray((a @ chi[order].T).T)
    spread = np.asarray(solvers.make_solver(a, lambda_abs, linear, size)(y), dtype=np.float64)
    return spread[np.argsort(order)]


def background_spread_arrays(
    system_matrix_rows: np.ndarray, background_rows: np.ndarray, params: ReconParams, lambda_abs: float, size
) -> np.ndarray:
    """(2, P): the linear reconstructions of the background spectrum b and of i·b (prepared
    rows): the image of any residual complex multiple of the background, two further GTM
    columns (``recon.quantify.region_model``'s ``background_columns``)."""
    a = solvers.stack_real(system_matrix_rows, None, params.dtype)
    b = np.asarray(background_rows, dtype=np.complex128)
    if b.shape != (a.shape[0] // 2,):
        raise ValueError(f"background rows have shape {b.shape}, expected ({a.shape[0] // 2},)")
    y = solvers.stack_real(system_matrix_rows, np.stack([b, 1j * b]), params.dtype)[1]
    linear = (
        params.replace(positivity=False)
        if params.solver in LINEAR_SOLVERS
        else params.replace(solver="kaczmarz", positivity=False)
    )
    return np.asarray(solvers.make_solver(a, lambda_abs, linear, size)(y), dtype=np.float64)


def region_spread(
    system_matrix_path: str | os.PathLike,
    parameters: dict,
    masks: np.ndarray,
    background_rows: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`region_spread_arrays` for a stored reconstruction: rebuilds the
    system-matrix rows from the calibration file with the plan recorded in the
    reconstruction's ``_parameters`` (selected rows, λ_abs, background correction,
    weighting) and checks that the calibration is the one recorded (SHA-256).

    With ``background_rows`` (the stored background spectrum) two rows are appended:
    :func:`background_spread_arrays`, so the result is (R + 2, P)."""
    from recon.mdf import MDFFile

    if not os.path.isfile(system_matrix_path):
        raise ValueError(f"{system_matrix_path}: no such calibration file")
    try:
        params = ReconParams.from_dict(dict(parameters["params"]))
        lam = float(parameters["lambda_abs"])
        channel = np.asarray(parameters["selection"]["channel"], dtype=np.int64)
        frequency = np.asarray(parameters["selection"]["frequency_index"], dtype=np.int64)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the reconstruction does not record its plan ({exc}): cannot rebuild its spread") from None
    recorded = ((parameters.get("inputs") or {}).get("system_matrix") or {}).get("sha256") or parameters.get(
        "system_matrix_sha256"
    )
    if recorded is not None and recorded != sha256_file(system_matrix_path):
        raise ValueError(f"{system_matrix_path} is not the calibration this image was reconstructed with (SHA-256)")
    weights = parameters.get("row_weights")
    if params.weighting == "whiten" and (weights is None or len(weights) != channel.shape[0]):
        raise ValueError("weighting='whiten': the reconstruction does not record its row weights")
    with MDFFile(system_matrix_path) as smf:
        if smf.calibration_size is None:
            raise ValueError(f"{system_matrix_path}: calibration has no /calibration/size")
        size = tuple(int(v) for v in smf.calibration_size)
        union, col = np.unique(frequency, return_inverse=True)
        s_sub, bg_sub = smf.system_matrix(frequencies=union)
        tf = smf.transfer_function
    s = s_sub[channel, col].astype(np.complex128)
    if params.sm_background_correction and bg_sub.shape[-1] > 0:
        s -= bg_sub[channel, col].mean(axis=-1)[:, None]
    if parameters.get("calibration_transfer_function_divided"):
        if tf is None:
            raise ValueError(f"{system_matrix_path}: the image was made dividing by a transfer function it lacks")
        s /= np.asarray(tf)[channel, frequency][:, None]
    if params.weighting == "row_norm":
        s /= np.maximum(np.linalg.norm(s, axis=1), np.finfo(np.float64).tiny)[:, None]
    elif params.weighting == "whiten":
        s *= np.asarray(weights, dtype=np.float64)[:, None]
    spread = region_spread_arrays(s, masks, params, lam, size)
    if background_rows is None:
        return spread
    return np.concatenate([spread, background_spread_arrays(s, background_rows, params, lam, size)])
