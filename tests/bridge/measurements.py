"""Simulated MDF measurements for the bridge's tests (made with recon.simulate)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from recon.phantoms import RasterisedPhantom
from recon.simulate import SimulatedScan, scanner_preset, write_scan_mdf


def write_measurement(
    path: Path,
    *,
    frames: int = 30,
    background: tuple[int, int] = (3, 3),
    dtype: str = "float32",
    frame_duration_s: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D (fast preset: 2 channels x 816 samples) measurement; returns (data, is_background).

    ``frame_duration_s`` sets /acquisition/numAverages so that a frame lasts about that long.
    """
    scanner = scanner_preset(2, fast=True)
    rng = np.random.default_rng(seed)
    shape = (frames, 1, scanner.num_receive_channels, scanner.num_sampling_points)
    if np.dtype(dtype).kind == "f":
        data = (rng.standard_normal(shape) * 1e-6).astype(dtype)
    else:
        data = rng.integers(-2000, 2000, size=shape).astype(dtype)
    is_bg = np.zeros(frames, dtype=bool)
    is_bg[: background[0]] = True
    if background[1]:
        is_bg[frames - background[1] :] = True
    phantom = RasterisedPhantom(
        inclusions=(), positions_m=np.zeros((0, 3)), iron_ng=np.zeros(0), label=np.zeros(0, int)
    )
    write_scan_mdf(str(path), SimulatedScan(scanner, data, is_bg, phantom, np.zeros((2, 409), complex)))
    if frame_duration_s is not None:
        with h5py.File(path, "r+") as h5:
            averages = max(1, round(frame_duration_s / scanner.period_s))
            h5["/acquisition/numAverages"][()] = averages
    return data, is_bg
