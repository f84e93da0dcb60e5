"""What a reconstruction needs of its two files, checked before any data is read.

One home for the refusals of :func:`recon.pipeline.reconstruct_file` that
depend on the files' headers only, so that :func:`recon.validate.validate`
(one file) and :func:`recon.validate.validate_pair` (a calibration and a scan)
report exactly what a reconstruction would refuse, with the same words.

Layout conventions followed (those of MPIFiles.jl, the reference reader, and
of the MDF specification v2.1, section "measurement" and "calibration"):

- ``framePermutation`` is σ in one-line notation: stored frame i is frame
  σ(i) of the acquisition (1-based as MPIFiles writes it, 0-based accepted).
  A calibration's *stored* foreground frames are in grid order (x fastest,
  then y, then z) and ``isBackgroundFrame`` is in stored order: MPIFiles'
  ``systemMatrix`` takes ``data[measFGFrameIdx(f), :]`` in stored order, and
  its ``calibPostProcessing`` stores ``fullFramePermutation`` (background
  frames last, a meandering robot path undone) with ``measIsBGFrame`` =
  zeros(O) then ones(E). See :class:`recon.mdf.MDFFile` for the reader side.
- ``frequencySelection`` lists the stored frequencies' indices into the full
  K axis, in the stored order (1-based as MPIFiles writes them; a 0 marks a
  0-based list); the calibration SNR may cover the stored or all frequencies.
- Transfer functions: :func:`recon.preprocess.transfer_function_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon import preprocess
from recon.mdf import MDFFile
from recon.params import ReconParams

__all__ = ["InputError", "InputPlan", "check_calibration", "check_compatible", "check_pair", "full_axis_snr"]


class InputError(ValueError):
    """A readable file, or pair of files, that a reconstruction cannot use.

    ``dataset`` names the dataset concerned (``""`` when it is the pair).
    """

    def __init__(self, message: str, dataset: str = ""):
        super().__init__(message)
        self.dataset = dataset


@dataclass(frozen=True)
class InputPlan:
    """Header facts of a calibration + scan pair that passed :func:`check_pair`.

    size : (nx, ny, nz); field_of_view_m, field_of_view_center_m : (3,) m;
    delta_concentration_mol_per_l : float; snr : (C, K) float or None — the
    calibration SNR (period 0) on the full K axis, 0 where not stored;
    available : (K,) bool — frequencies both files (and an empty-bore file)
    store; notes : list of str.
    """

    size: tuple[int, int, int]
    field_of_view_m: np.ndarray
    field_of_view_center_m: np.ndarray
    delta_concentration_mol_per_l: float
    snr: np.ndarray | None
    available: np.ndarray
    notes: list[str] = field(default_factory=list)


def check_calibration(smf: MDFFile) -> None:
    """Refuse a file that cannot serve as a system matrix (ValueError, one sentence)."""
    if smf.kind != "calibration":
        raise InputError(f"{smf.path}: expected a calibration (system matrix), got a {smf.kind}")
    if smf.calibration_size is None:
        raise InputError(f"{smf.path}: calibration has no /calibration/size", "/calibration/size")
    delta = smf.tracer_concentration_mol_per_l
    if delta is None or not np.isfinite(delta) or delta <= 0:
        raise InputError(
            f"{smf.path}: /tracer/concentration missing or not > 0 ({delta}): the delta sample's "
            "concentration is needed to turn the image into mol Fe/L",
            "/tracer/concentration",
        )
    order = str(smf.field("/calibration/order", "xyz")).strip().lower()
    if order != "xyz":
        raise InputError(
            f"{smf.path}: /calibration/order is {order!r}; only 'xyz' (x fastest) is supported", "/calibration/order"
        )
    full_axis_snr(smf)  # refuses an SNR that fits neither the full nor the stored frequency axis


def full_axis_snr(smf: MDFFile, snr: np.ndarray | None = None) -> np.ndarray | None:
    """Calibration SNR of period 0 as (C, K) on the full frequency axis, 0 where not stored.

    ``snr`` (C, K_stored) or (C, K) replaces ``/calibration/snr`` when given
    (an SNR computed from the background frames of :meth:`MDFFile.system_matrix`).
    """
    if snr is None:
        if smf.snr is None:
            return None
        stored = np.asarray(smf.snr)
        if stored.ndim != 3:
            raise InputError(
                f"{smf.path}: /calibration/snr has shape {stored.shape}, expected J x C x K", "/calibration/snr"
            )
        snr = stored[0]
    snr = np.asarray(snr, dtype=np.float64)
    C, K = smf.num_receive_channels, smf.num_frequencies
    avail = smf.available_frequencies
    if snr.shape == (C, K):
        return snr
    if snr.shape == (C, avail.size):
        full = np.zeros((C, K))
        full[:, avail] = snr
        return full
    raise InputError(
        f"{smf.path}: /calibration/snr covers {snr.shape[-1]} frequencies of {snr.shape[0]} channels; the file has "
        f"{C} channels and {K} frequencies, {avail.size} of them stored",
        "/calibration/snr",
    )


def check_compatible(smf: MDFFile, other: MDFFile, what: str) -> None:
    """Refuse a scan recorded with other receive or drive settings than the calibration (InputError)."""
    checks = {
        "receive channels": (smf.num_receive_channels, other.num_receive_channels),
        "sampling points": (smf.num_sampling_points, other.num_sampling_points),
        "base frequency (Hz)": (smf.base_frequency_hz, other.base_frequency_hz),
    }
    for name, (a, b) in checks.items():
        if a != b:
            raise InputError(f"system matrix and {what} differ in {name}: {a} vs {b}")
    if not np.array_equal(np.asarray(smf.dividers), np.asarray(other.dividers)):
        raise InputError(f"system matrix and {what} differ in dividers: {list(smf.dividers)} vs {list(other.dividers)}")


def check_pair(
    smf: MDFFile, mf: MDFFile, params: ReconParams | None = None, background: MDFFile | None = None
) -> InputPlan:
    """Everything :func:`recon.pipeline.reconstruct_file` refuses before reading data.

    Parameters
    ----------
    smf, mf : MDFFile
        The calibration and the scan.
    params : ReconParams, optional
        Decides whether the scan's background frames are needed.
    background : MDFFile, optional
        The empty-bore scan when ``params.background`` names one.

    Raises
    ------
    ValueError
        With the sentence reconstruct would print.
    """
    params = ReconParams() if params is None else params
    check_calibration(smf)
    if mf.kind != "measurement":
        raise InputError(f"{mf.path}: expected a measurement, got a {mf.kind}")
    check_compatible(smf, mf, "measurement")
    available = np.zeros(smf.num_frequencies, dtype=bool)
    available[smf.available_frequencies] = True
    scan_has = np.zeros_like(available)
    scan_has[mf.available_frequencies] = True
    available &= scan_has
    if background is not None:
        check_compatible(smf, background, "empty-bore scan")
        bg_has = np.zeros_like(available)
        bg_has[background.available_frequencies] = True
        available &= bg_has
    if not available.any():
        raise InputError(
            f"the calibration stores {smf.available_frequencies.size} frequencies and the measurement "
            f"{mf.available_frequencies.size}, none in common",
            "/measurement/frequencySelection",
        )
    try:
        preprocess.transfer_function_plan(
            smf.transfer_function,
            smf.layout["isTransferFunctionCorrected"],
            mf.transfer_function,
            mf.layout["isTransferFunctionCorrected"],
        )
    except ValueError as exc:
        raise InputError(str(exc), "/measurement/isTransferFunctionCorrected") from None
    try:
        preprocess.background_source(
            int(np.count_nonzero(mf.is_background_frame)), int(np.count_nonzero(smf.is_background_frame)), params
        )
    except ValueError as exc:
        raise InputError(str(exc), "/measurement/isBackgroundFrame") from None
    notes = []
    if not available.all():
        notes.append(
            f"frequency selection: {int(available.sum())} of {available.size} frequencies stored in both files"
        )
    size = tuple(int(v) for v in smf.calibration_size or ())
    return InputPlan(
        size=(size[0], size[1], size[2]),
        field_of_view_m=smf.field_of_view_m if smf.field_of_view_m is not None else np.ones(3),
        field_of_view_center_m=smf.field_of_view_center_m if smf.field_of_view_center_m is not None else np.zeros(3),
        delta_concentration_mol_per_l=float(smf.tracer_concentration_mol_per_l or 0.0),
        snr=full_axis_snr(smf),
        available=available,
        notes=notes,
    )
