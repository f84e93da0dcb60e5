"""Hostile HDF5 files: small on disk, huge in what they declare.

Each builder starts from a valid MDF file (so every other check passes and a reader
would go on to read the data) and swaps one dataset for one that declares far more
than the file stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

TERA = 10**12


def _huge_frames(h5: h5py.File, elements: int) -> tuple[int, ...]:
    """A /measurement/data shape with about ``elements`` values that agrees with the header."""
    old = h5["/measurement/data"]
    fast = bool(np.ravel(h5.get("/measurement/isFastFrameAxis", [0])[()])[0])
    per_frame = int(np.prod(old.shape[:3] if fast else old.shape[1:]))
    frames = max(1, elements // per_frame)
    shape = (*old.shape[:3], frames) if fast else (frames, *old.shape[1:])
    del h5["/measurement/data"]
    for name in ("/measurement/isBackgroundFrame", "/acquisition/numFrames"):
        if name in h5:
            del h5[name]
    h5["/acquisition/numFrames"] = np.int64(frames)
    return shape


def unallocated_measurement(src: Path, dst: Path, *, elements: int = TERA) -> Path:
    """/measurement/data declares ``elements`` float32 values; nothing is stored (fill value only)."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as h5:
        shape = _huge_frames(h5, elements)
        h5.create_dataset("/measurement/data", shape=shape, dtype="f4")
    return dst


def chunked_measurement(src: Path, dst: Path, *, elements: int = TERA, write_one_chunk: bool = True) -> Path:
    """A gzip-chunked /measurement/data declaring ``elements`` values of which one chunk is stored."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as h5:
        shape = _huge_frames(h5, elements)
        chunks = tuple(min(s, 64) for s in shape)
        ds = h5.create_dataset("/measurement/data", shape=shape, dtype="f4", chunks=chunks, compression="gzip")
        if write_one_chunk:
            ds[tuple(slice(0, c) for c in chunks)] = np.ones(chunks, dtype="f4")
    return dst


def label_volume_mdf(dst: Path, *, voxels: int = 10**11) -> Path:
    """A reconstruction-shaped label volume (~30 KB) whose data declares ``voxels`` float32 values."""
    n = int(round(voxels ** (1 / 3)))
    with h5py.File(dst, "w") as h5:
        h5["/version"] = np.bytes_("2.1.0")
        h5["/uuid"] = np.bytes_("00000000-0000-0000-0000-000000000000")
        h5.create_dataset("/reconstruction/data", shape=(1, n**3, 1), dtype="f4")
        h5["/reconstruction/size"] = np.array([n, n, n], dtype=np.int64)
        h5["/reconstruction/fieldOfView"] = np.full(3, 0.02)
        h5["/reconstruction/fieldOfViewCenter"] = np.zeros(3)
        h5.create_dataset("/padding", data=np.arange(3000, dtype=np.int64))  # a realistic ~30 KB on disk
    return dst


def huge_npy(dst: Path, *, elements: int = 10**11) -> Path:
    """A .npy whose header declares ``elements`` int64 values, followed by a few bytes."""
    from numpy.lib import format as npy_format

    with open(dst, "wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "<i8", "fortran_order": False, "shape": (elements,)})
        fh.write(b"\x01" * 800)
    return dst
