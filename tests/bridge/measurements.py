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


class GrowingMeasurement:
    """A scanner writing a measurement frame block by frame block (h5py, like a DAQ would).

    The header is copied from ``template`` (an MDF measurement) when the file is created;
    ``/measurement/data`` and ``isBackgroundFrame`` start empty and grow along N.
    ``swmr=True`` writes in HDF5 single-writer/multiple-reader mode (file kept open, flushed
    after each block); ``swmr=False`` reopens the file for each block and closes it again.
    """

    def __init__(self, path: Path, template: Path, *, swmr: bool, num_frames: int = 0) -> None:
        self.path = path
        self.swmr = swmr
        with h5py.File(template, "r") as src:
            self.frame_shape = src["/measurement/data"].shape[1:]
            self.dtype = src["/measurement/data"].dtype
            self._h5 = h5py.File(path, "w", libver="latest") if swmr else h5py.File(path, "w")
            for name in ("study", "experiment", "scanner", "acquisition", "tracer"):
                if name in src:
                    src.copy(src[name], self._h5, name=name)
            for name in ("version", "uuid", "time"):
                self._h5[name] = src[name][()]
        self._h5["/acquisition/numFrames"][()] = num_frames
        self._h5.create_dataset(
            "/measurement/data",
            shape=(0, *self.frame_shape),
            maxshape=(None, *self.frame_shape),
            dtype=self.dtype,
            chunks=(1, *self.frame_shape),
        )
        self._h5.create_dataset(
            "/measurement/isBackgroundFrame", shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(64,)
        )
        for flag in ("isBackgroundCorrected", "isFastFrameAxis", "isFourierTransformed", "isFramePermutation"):
            self._h5[f"/measurement/{flag}"] = np.int8(0)
        if swmr:
            self._h5.swmr_mode = True
        else:
            self._h5.close()
        self._h5.flush() if swmr else None

    def append(self, frames: np.ndarray, background: np.ndarray) -> None:
        h5 = self._h5 if self.swmr else h5py.File(self.path, "r+")
        try:
            data, flags = h5["/measurement/data"], h5["/measurement/isBackgroundFrame"]
            n = data.shape[0]
            data.resize(n + len(frames), axis=0)
            data[n:] = frames
            flags.resize(n + len(frames), axis=0)
            flags[n:] = background
            h5.flush()
        finally:
            if not self.swmr:
                h5.close()

    def close(self) -> None:
        if self.swmr:
            self._h5.close()
