"""Builders of small MDF files for the MDF, validate and CLI tests (no tests here).

Each builder starts from data in a canonical order (acquisition order,
N x J x C x K or V) and stores it in one of the MDF layouts, so a test can
compare what the reader returns with what went in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recon.mdf import write_mdf

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mdf" / "robot_1d_calibration_v2.0.mdf"

BANDWIDTH_HZ = 1.25e6
BASE_FREQUENCY_HZ = 2.5e6


def acquisition_fields(N: int, J: int, C: int, V: int, *, legacy: bool = False) -> dict[str, Any]:
    """Required acquisition fields for N frames of J periods, C channels, V samples."""
    return {
        "/acquisition/numFrames": N,
        ("/acquisition/numPeriods" if legacy else "/acquisition/numPeriodsPerFrame"): J,
        "/acquisition/numAverages": 1,
        "/acquisition/startTime": "2024-01-01T00:00:00.000",
        "/acquisition/drivefield/baseFrequency": BASE_FREQUENCY_HZ,
        "/acquisition/drivefield/numChannels": 2,
        "/acquisition/drivefield/divider": np.array([[102], [96]]),
        "/acquisition/drivefield/strength": np.full((J, 2, 1), 0.012),
        "/acquisition/drivefield/phase": np.zeros((J, 2, 1)),
        "/acquisition/drivefield/waveform": ["sine", "sine"],
        "/acquisition/receiver/bandwidth": BANDWIDTH_HZ,
        "/acquisition/receiver/numChannels": C,
        "/acquisition/receiver/numSamplingPoints": V,
        "/acquisition/receiver/unit": "V",
        "/tracer/name": ["Perimag"],
        "/tracer/concentration": np.array([0.5]),
        "/tracer/solute": ["Fe"],
    }


def layout_fields(
    canonical: np.ndarray,
    *,
    V: int,
    fourier: bool,
    fast: bool,
    legacy: bool = False,
    frequency_selection: np.ndarray | None = None,
    selection_base: int = 1,
    permutation: np.ndarray | None = None,
    background: np.ndarray | None = None,
    conversion: np.ndarray | None = None,
) -> dict[str, Any]:
    """Store ``canonical`` (N x J x C x X in acquisition order) in the requested layout.

    ``permutation[i]`` (0-based) is the acquisition frame stored at position i;
    it is written with the same base as ``selection_base``. ``background`` is
    the background mask in acquisition order.
    """
    N, J, C, _ = canonical.shape
    data = canonical
    bg = np.zeros(N, dtype=bool) if background is None else np.asarray(background, dtype=bool)
    fields: dict[str, Any] = acquisition_fields(N, J, C, V, legacy=legacy)
    if permutation is not None:
        data = data[permutation]
        bg = bg[permutation]
        fields["/measurement/framePermutation"] = np.asarray(permutation) + selection_base
    if frequency_selection is not None:
        data = data[..., frequency_selection]
        fields["/measurement/frequencySelection"] = np.asarray(frequency_selection) + selection_base
    if fast:
        data = np.transpose(data, (1, 2, 3, 0))
    fields.update(
        {
            "/measurement/data": np.ascontiguousarray(data),
            "/measurement/isFourierTransformed": fourier,
            ("/measurement/isTransposed" if legacy else "/measurement/isFastFrameAxis"): fast,
            "/measurement/isFrequencySelection": frequency_selection is not None,
            "/measurement/isFramePermutation": permutation is not None,
            "/measurement/isBackgroundCorrected": False,
            "/measurement/isTransferFunctionCorrected": False,
            "/measurement/isSpectralLeakageCorrected": False,
            "/measurement/isBackgroundFrame": bg,
        }
    )
    if not legacy:
        fields["/measurement/isSparsityTransformed"] = False
    if conversion is not None:
        fields["/acquisition/receiver/dataConversionFactor"] = np.asarray(conversion, dtype=float)
    return fields


def random_spectra(rng: np.random.Generator, N: int, J: int, C: int, K: int) -> np.ndarray:
    return (rng.standard_normal((N, J, C, K)) + 1j * rng.standard_normal((N, J, C, K))).astype(np.complex64)


def write_time_measurement(
    path: Path, *, N: int = 6, J: int = 2, C: int = 3, V: int = 16, seed: int = 0, **layout: Any
) -> np.ndarray:
    """A time-domain measurement; returns the float time data (acquisition order)."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((N, J, C, V)).astype(np.float32)
    write_mdf(path, layout_fields(t, V=V, fourier=False, fast=False, **layout), version="2.1.0")
    return t


def calibration_fields(size: tuple[int, int, int], n_background: int) -> dict[str, Any]:
    return {
        "/calibration/size": np.array(size),
        "/calibration/fieldOfView": np.array([0.02, 0.02, 0.01]),
        "/calibration/fieldOfViewCenter": np.zeros(3),
        "/calibration/method": "robot",
        "/calibration/order": "xyz",
    }


def write_fast_calibration(
    path: Path,
    *,
    size=(4, 3, 2),
    n_background: int = 2,
    J: int = 1,
    C: int = 2,
    V: int = 30,
    seed: int = 1,
    version: str = "2.1.0",
    **layout: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """A fast-frame-axis calibration; returns (canonical N x J x C x K spectra, background mask)."""
    rng = np.random.default_rng(seed)
    O = int(np.prod(size))
    N = O + n_background
    K = V // 2 + 1
    spec = random_spectra(rng, N, J, C, K)
    bg = np.zeros(N, dtype=bool)
    bg[O:] = True
    fields = layout_fields(spec, V=V, fourier=True, fast=True, background=bg, **layout)
    fields.update(calibration_fields(size, n_background))
    fields["/calibration/snr"] = np.abs(rng.standard_normal((J, C, K))) * 10
    write_mdf(path, fields, version=version)
    return spec, bg
