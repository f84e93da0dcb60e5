"""Preprocessing: frames, background, frequency rows, transfer function, weights.

The system of equations is built on *rows*: one row per selected (receive
channel, frequency) pair, stacked channel-major. Every function here takes and
returns plain arrays; :func:`select_rows` decides the rows from the
calibration's SNR and the frequency band, and :func:`prepare_rows` turns
gathered rows of the system matrix and of the scan into the weighted,
background-corrected problem the solvers see. The file path
(:mod:`recon.pipeline`) and the array path call the very same two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon.params import ReconParams


@dataclass(frozen=True)
class RowSelection:
    """Selected (channel, frequency) rows, channel-major, ascending.

    channel, frequency : (M,) int64 — 0-based receive channel and index into
    the K frequencies; frequency_hz, snr : (M,) float64.
    """

    channel: np.ndarray
    frequency: np.ndarray
    frequency_hz: np.ndarray
    snr: np.ndarray
    candidates: int

    @property
    def num_rows(self) -> int:
        return int(self.channel.shape[0])

    def flat_index(self, num_frequencies: int) -> np.ndarray:
        """(M,) index into a C×K array flattened channel-major."""
        return self.channel * num_frequencies + self.frequency

    def as_dict(self) -> dict:
        return {
            "num_rows": self.num_rows,
            "candidates": int(self.candidates),
            "channel": self.channel.tolist(),
            "frequency_index": self.frequency.tolist(),
        }


@dataclass
class PreparedRows:
    """The weighted least-squares problem S x ≈ u, row by row.

    system_matrix : (M, P) complex128, background-corrected and weighted rows
    measurements : (Q, M) complex128, one row vector per reconstructed frame
    frame_groups : list of Q int arrays — file frame indices averaged into each
    row_weights : (M,) float64 applied to both sides
    notes : list of str — what was done (or skipped) and why
    """

    system_matrix: np.ndarray
    measurements: np.ndarray
    frame_groups: list
    row_weights: np.ndarray
    selection: RowSelection
    notes: list = field(default_factory=list)


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or inf) out of {np.size(arr)}")


def select_rows(
    snr: np.ndarray | None,
    frequencies_hz: np.ndarray,
    params: ReconParams,
    num_channels: int,
    *,
    available: np.ndarray | None = None,
) -> RowSelection:
    """Choose the (channel, frequency) rows to reconstruct with.

    Parameters
    ----------
    snr : (C, K) float or None
        Calibration SNR per row (``/calibration/snr`` period 0). None: no SNR
        threshold and no ``max_rows`` ranking is possible (ValueError if
        ``max_rows`` is set).
    frequencies_hz : (K,) float
    params : ReconParams
        ``snr_threshold``, ``min_freq_hz``, ``max_freq_hz``, ``channels``, ``max_rows``.
    num_channels : int
        C.
    available : (K,) bool or None
        Frequencies both files store (a frequency-selected calibration or scan
        stores a subset); rows at the others are never selected. None: all.

    Raises
    ------
    ValueError
        Channel indices out of range, SNR of the wrong shape, or an empty
        selection (the message names the sizes and the thresholds).
    """
    freqs = np.asarray(frequencies_hz, dtype=np.float64)
    k = freqs.shape[0]
    if snr is not None:
        snr = np.asarray(snr, dtype=np.float64)
        if snr.shape != (num_channels, k):
            raise ValueError(f"snr has shape {snr.shape}, expected (C, K) = ({num_channels}, {k})")
        _check_finite("snr", snr)
    channels = np.arange(num_channels) if params.channels is None else np.asarray(params.channels)
    if channels.size and channels.max() >= num_channels:
        raise ValueError(f"channels {tuple(channels.tolist())} out of range for {num_channels} receive channels")
    mask = np.zeros((num_channels, k), dtype=bool)
    band = freqs >= params.min_freq_hz
    if params.max_freq_hz is not None:
        band &= freqs <= params.max_freq_hz
    if available is not None:
        available = np.asarray(available, dtype=bool)
        if available.shape != (k,):
            raise ValueError(f"available has shape {available.shape}, expected ({k},)")
        band &= available
    mask[channels] = band[None, :]
    if snr is not None:
        mask &= snr >= params.snr_threshold
    ch, fr = np.nonzero(mask)
    snr_sel = snr[ch, fr] if snr is not None else np.full(ch.shape, np.inf)
    if ch.size == 0:
        raise ValueError(
            f"empty frequency selection: 0 of {num_channels}x{k} rows pass "
            f"snr_threshold={params.snr_threshold}, min_freq_hz={params.min_freq_hz}, "
            f"max_freq_hz={params.max_freq_hz}, channels={params.channels}"
            + ("" if snr is None else f" (max SNR in band {float(np.max(snr[:, band], initial=0.0)):.3g})")
        )
    candidates = int(ch.size)
    if params.max_rows is not None and ch.size > params.max_rows:
        if snr is None:
            raise ValueError("max_rows needs the calibration SNR to rank rows, and the file has none")
        # Highest SNR first; ties broken by position so the choice is deterministic.
        order = np.lexsort((fr, ch, -snr_sel))[: params.max_rows]
        order.sort()
        ch, fr, snr_sel = ch[order], fr[order], snr_sel[order]
    return RowSelection(ch.astype(np.int64), fr.astype(np.int64), freqs[fr], snr_sel, candidates)


@dataclass(frozen=True)
class TransferFunctionPlan:
    """What dividing by transfer functions puts both files in the same state.

    calibration_divisor, measurement_divisor : array or None — divide that
    file's data by it (None: leave that file as stored); note : str.
    """

    calibration_divisor: np.ndarray | None
    measurement_divisor: np.ndarray | None
    note: str


def transfer_function_plan(
    calibration_tf: np.ndarray | None,
    calibration_corrected: bool,
    measurement_tf: np.ndarray | None,
    measurement_corrected: bool,
) -> TransferFunctionPlan:
    """Bring the calibration and the scan to the same transfer-function state.

    The MDF specification (``/acquisition/receiver/transferFunction``) relates
    the ADC voltage to the coil voltage by ``u_adc = a_k u_coil``; a file flagged
    ``isTransferFunctionCorrected`` already stores ``u_coil``. MPIFiles
    (``getMeasurementsFD``/``getSystemMatrix`` with ``tfCorrection``) divides a
    file's data by its own transfer function only when it carries one and is
    not flagged corrected; this rule does the same for each file separately and
    then requires that both end in the same state:

    - both corrected (flagged, or divided here): solve on coil voltages;
    - neither corrected nor correctable (no flag, no transfer function): both
      raw, assumed to share the receive chain, as MPIReco does;
    - one corrected and the other raw without a transfer function: refused,
      because no division can make them comparable (solving anyway scales the
      image by the unknown transfer function: the silent errors of issue #14).

    Parameters
    ----------
    calibration_tf, measurement_tf : array of complex or None
        Any shape (full (C, K) or the selected rows (M,)); the two need not match.
    calibration_corrected, measurement_corrected : bool
        The files' ``/measurement/isTransferFunctionCorrected`` flags.

    Raises
    ------
    ValueError
        When the two files cannot be brought to the same state.
    """

    def state(tf: np.ndarray | None, corrected: bool) -> str:
        if corrected:
            return "flagged isTransferFunctionCorrected"
        return "raw, with its transfer function" if tf is not None else "raw, without a transfer function"

    cal_can = calibration_corrected or calibration_tf is not None
    meas_can = measurement_corrected or measurement_tf is not None
    if not cal_can and not meas_can:
        return TransferFunctionPlan(None, None, "transfer function: neither file carries one; both used as stored")
    if cal_can != meas_can:
        raise ValueError(
            "transfer functions: the calibration is "
            f"{state(calibration_tf, calibration_corrected)} and the measurement is "
            f"{state(measurement_tf, measurement_corrected)}; the two cannot be brought to the same state "
            "(store /acquisition/receiver/transferFunction in the raw file, or set "
            "/measurement/isTransferFunctionCorrected where the data is already corrected)"
        )
    cal_div = None if calibration_corrected else calibration_tf
    meas_div = None if measurement_corrected else measurement_tf
    divided = [name for name, d in (("calibration", cal_div), ("measurement", meas_div)) if d is not None]
    note = (
        "transfer function: divided " + " and ".join(divided) + ", each by its own"
        if divided
        else "transfer function: both files flagged corrected"
    )
    return TransferFunctionPlan(cal_div, meas_div, note)


def _divide_rows(rows: np.ndarray, divisor: np.ndarray, what: str) -> np.ndarray:
    """rows (M, ...) / divisor (M,): refuses zeros or non-finite values at the selected rows."""
    divisor = np.asarray(divisor)
    if divisor.shape != (rows.shape[0],):
        raise ValueError(f"{what} transfer function rows have shape {divisor.shape}, expected ({rows.shape[0]},)")
    if not np.all(np.isfinite(divisor)) or np.any(divisor == 0):
        raise ValueError(f"{what} transfer function is zero or not finite at selected frequencies")
    return rows / divisor.reshape((-1,) + (1,) * (rows.ndim - 1))


def gather_rows(spectra: np.ndarray, selection: RowSelection) -> np.ndarray:
    """Rows of (…, C, K) spectra: returns (…, M)."""
    return spectra[..., selection.channel, selection.frequency]


def foreground_frames(is_background: np.ndarray, frames: tuple[int, int] | None) -> np.ndarray:
    """File frame indices to reconstruct: non-background frames in [start, stop)."""
    n = is_background.shape[0]
    start, stop = (0, n) if frames is None else frames
    if start >= n:
        raise ValueError(f"frames {frames} start beyond the {n} frames of the scan")
    stop = min(stop, n)
    idx = np.arange(start, stop)
    idx = idx[~is_background[idx]]
    if idx.size == 0:
        raise ValueError(f"no foreground frames in range [{start}, {stop}) of {n} frames")
    return idx


def average_blocks(indices: np.ndarray, average: int) -> list[np.ndarray]:
    """Split consecutive frame indices into blocks of ``average`` (last may be shorter)."""
    return [indices[i : i + average] for i in range(0, indices.shape[0], average)]


def _background_blocks(is_background: np.ndarray) -> list[np.ndarray]:
    """Contiguous runs of background frames, as index arrays."""
    idx = np.flatnonzero(is_background)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    return np.split(idx, breaks)


def background_estimate(
    rows: np.ndarray,
    is_background: np.ndarray,
    frame_index: np.ndarray,
    mode: str,
) -> np.ndarray:
    """Background to subtract from each frame in ``frame_index``.

    rows : (N, M) complex measurement rows of all frames
    mode : "mean" — mean of all background frames; "interpolate" — linear in
        frame index between the mean of the nearest background block before
        and the one after (the nearest block alone at the ends).
    Returns (len(frame_index), M) complex.
    """
    blocks = _background_blocks(is_background)
    if not blocks:
        raise ValueError(
            f"background='{mode}' needs background frames, but none of the {is_background.shape[0]} "
            f"frames is flagged isBackgroundFrame; use background='none' or an empty-bore file"
        )
    if mode == "mean":
        mean = rows[np.flatnonzero(is_background)].mean(axis=0)
        return np.broadcast_to(mean, (frame_index.shape[0], rows.shape[1]))
    if mode != "interpolate":
        raise ValueError(f"unknown background mode {mode!r}")
    centres = np.array([b.mean() for b in blocks])
    means = np.stack([rows[b].mean(axis=0) for b in blocks])
    out = np.empty((frame_index.shape[0], rows.shape[1]), dtype=rows.dtype)
    for i, n in enumerate(frame_index):
        before = np.flatnonzero(centres <= n)
        after = np.flatnonzero(centres >= n)
        if before.size and after.size:
            b, a = before[-1], after[0]
            if a == b:
                out[i] = means[a]
            else:
                s = (n - centres[b]) / (centres[a] - centres[b])
                out[i] = (1.0 - s) * means[b] + s * means[a]
        else:
            out[i] = means[before[-1]] if before.size else means[after[0]]
    return out


def background_source(num_scan_background: int, num_calibration_background: int, params: ReconParams) -> str:
    """Where the scan's background comes from, as a note; ValueError when from nowhere.

    ``params.background`` ``"mean"`` / ``"interpolate"`` use the scan's own
    background frames. A scan without any (a valid MDF layout: every frame a
    foreground frame) falls back to the mean of the calibration's empty-bore
    (background) frames: same scanner and receive chain, measured at calibration
    time, so any drift of the scanner background since then stays in the image
    (MPIReco's ``bgCorrection`` with a calibration's background frames makes the
    same assumption). Without those either, the scan is refused.
    """
    if params.background == "none" or params.background_is_external:
        return "external" if params.background_is_external else "none"
    if num_scan_background > 0:
        return "scan"
    if num_calibration_background > 0:
        return "calibration"
    raise ValueError(
        f"background={params.background!r} needs background frames, but the scan has none flagged "
        "isBackgroundFrame and the calibration has no background frames either; "
        "pass an empty-bore scan as background or use background='none'"
    )


def prepare_rows(
    system_matrix_rows: np.ndarray,
    sm_background_rows: np.ndarray | None,
    measurement_rows: np.ndarray,
    is_background: np.ndarray,
    selection: RowSelection,
    params: ReconParams,
    *,
    external_background_rows: np.ndarray | None = None,
    sm_transfer_function_rows: np.ndarray | None = None,
    measurement_transfer_function_rows: np.ndarray | None = None,
    sm_transfer_function_corrected: bool = False,
    measurement_transfer_function_corrected: bool = False,
) -> PreparedRows:
    """Build the weighted, background-corrected row problem.

    Parameters
    ----------
    system_matrix_rows : (M, P) complex — selected rows, voxels x fastest
    sm_background_rows : (M, E) complex or None — calibration background frames
    measurement_rows : (N, M) complex — selected rows of every frame of the scan
    is_background : (N,) bool
    selection : RowSelection of the M rows
    params : ReconParams (frames, average, background, weighting, sm_background_correction)
    external_background_rows : (N_e, M) complex or None — an empty-bore scan,
        required when ``params.background`` is a path; taken to be in the
        scan's transfer-function state
    sm_transfer_function_rows, measurement_transfer_function_rows : (M,) complex or None
        Receive-chain transfer functions of each file at the selected rows.
    sm_transfer_function_corrected, measurement_transfer_function_corrected : bool
        Each file's ``isTransferFunctionCorrected`` flag. Both files are brought
        to the same state first (:func:`transfer_function_plan`, which refuses
        files that cannot be); then backgrounds, averaging and weights.

    Returns
    -------
    PreparedRows

    Notes
    -----
    A scan without background frames (with ``background`` "mean" or
    "interpolate") gets the mean of the calibration's background frames
    subtracted instead, with a note (:func:`background_source`).
    """
    s = np.asarray(system_matrix_rows)
    u = np.asarray(measurement_rows)
    m = selection.num_rows
    if s.ndim != 2 or s.shape[0] != m:
        raise ValueError(f"system_matrix_rows has shape {s.shape}, expected ({m}, P)")
    if u.ndim != 2 or u.shape[1] != m:
        raise ValueError(f"measurement_rows has shape {u.shape}, expected (N, {m})")
    is_background = np.asarray(is_background, dtype=bool)
    if is_background.shape != (u.shape[0],):
        raise ValueError(f"is_background has shape {is_background.shape}, expected ({u.shape[0]},)")
    _check_finite("system matrix", s)
    _check_finite("measurement", u)
    notes: list[str] = []
    s = s.astype(np.complex128, copy=True)
    sm_bg = None if sm_background_rows is None else np.asarray(sm_background_rows)
    if sm_bg is not None:
        _check_finite("system matrix background", sm_bg)
    ext = None if external_background_rows is None else np.asarray(external_background_rows)

    plan = transfer_function_plan(
        sm_transfer_function_rows,
        sm_transfer_function_corrected,
        measurement_transfer_function_rows,
        measurement_transfer_function_corrected,
    )
    if plan.calibration_divisor is not None:
        s = _divide_rows(s, plan.calibration_divisor, "calibration")
        sm_bg = None if sm_bg is None else _divide_rows(sm_bg, plan.calibration_divisor, "calibration")
    if plan.measurement_divisor is not None:
        u = _divide_rows(u.T, plan.measurement_divisor, "measurement").T
        ext = None if ext is None or ext.ndim != 2 else _divide_rows(ext.T, plan.measurement_divisor, "measurement").T
    notes.append(plan.note)

    n_sm_bg = 0 if sm_bg is None else int(sm_bg.shape[-1])
    if params.sm_background_correction and sm_bg is not None and n_sm_bg > 0:
        s -= sm_bg.mean(axis=-1)[:, None]
        notes.append(f"system matrix: subtracted mean of {n_sm_bg} background frames")

    frame_index = foreground_frames(is_background, params.frames)
    corrected = _subtract_background(u, is_background, frame_index, sm_bg, ext, params, notes)

    groups = average_blocks(frame_index, params.average)
    pos = {int(n): i for i, n in enumerate(frame_index)}
    meas = np.stack([corrected[[pos[int(n)] for n in g]].mean(axis=0) for g in groups])

    weights = _row_weights(s, u, is_background, sm_bg, params, notes)
    s *= weights[:, None]
    meas = meas * weights[None, :]
    return PreparedRows(s, meas, groups, weights, selection, notes)


def _subtract_background(
    u: np.ndarray,
    is_background: np.ndarray,
    frame_index: np.ndarray,
    sm_bg: np.ndarray | None,
    ext: np.ndarray | None,
    params: ReconParams,
    notes: list[str],
) -> np.ndarray:
    """Background-corrected rows of the frames in ``frame_index`` (see :func:`background_source`)."""
    m = u.shape[1]
    n_sm_bg = 0 if sm_bg is None else int(sm_bg.shape[-1])
    source = background_source(int(is_background.sum()), n_sm_bg, params)
    if source == "none":
        notes.append("measurement: no background correction")
        return u[frame_index].astype(np.complex128)
    if source == "external":
        if ext is None or ext.shape[0] == 0:
            raise ValueError(f"background file {params.background!r} gave no frames")
        if ext.ndim != 2 or ext.shape[1] != m:
            raise ValueError(f"external background rows have shape {ext.shape}, expected (N_e, {m})")
        _check_finite("external background", ext)
        notes.append(f"measurement: subtracted mean of {ext.shape[0]} empty-bore frames")
        return u[frame_index] - ext.mean(axis=0)
    if source == "calibration" and sm_bg is not None:
        notes.append(
            f"measurement: the scan has no background frames; subtracted the mean of the calibration's "
            f"{n_sm_bg} empty-bore frames instead (scanner drift since calibration is not corrected)"
        )
        return u[frame_index] - sm_bg.mean(axis=-1)[None, :]
    notes.append(f"measurement: background '{params.background}' from {int(is_background.sum())} frames")
    return u[frame_index] - background_estimate(u, is_background, frame_index, params.background)


def _row_weights(
    s: np.ndarray,
    u: np.ndarray,
    is_background: np.ndarray,
    sm_bg: np.ndarray | None,
    params: ReconParams,
    notes: list[str],
) -> np.ndarray:
    """(M,) weights applied to both sides (``params.weighting``)."""
    if params.weighting == "none":
        return np.ones(s.shape[0])
    if params.weighting == "row_norm":
        norms = np.linalg.norm(s, axis=1)
        return 1.0 / np.maximum(norms, np.finfo(np.float64).tiny)
    bg_idx = np.flatnonzero(is_background)  # whiten
    if bg_idx.size >= 2:
        noise = np.std(u[bg_idx], axis=0)
        notes.append(f"whitening by noise of {bg_idx.size} scan background frames")
    elif sm_bg is not None and sm_bg.shape[-1] >= 2:
        noise = np.std(sm_bg, axis=-1)
        notes.append("whitening by noise of the calibration background frames")
    else:
        raise ValueError("weighting='whiten' needs >= 2 background frames in the scan or the calibration")
    return 1.0 / np.maximum(noise, np.finfo(np.float64).tiny)
