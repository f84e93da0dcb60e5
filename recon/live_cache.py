"""The live engine's disk cache: what a session's engine needs that depends only on the
calibration (its SHA-256), the plan and the ROI set, computed once and loaded at start.

Two entries besides the operator (``recon.operator``'s own cache, same folder):

- the calibration entry ``live-rows-<key>``: the selected rows (channel, frequency, SNR),
  their weights, the empty-bore mean (the reference) and frames, λ, the grid, the
  operator's key, and the real-stacked rows A themselves (``.npy``, loaded with
  ``mmap_mode="r"``): a new ROI set then needs no read of the calibration file. Keyed by
  :func:`calibration_key` (calibration SHA-256 + the plan's operator-shaping fields);
- the regions entry ``live-regions-<key>``: the region functionals, the calibration
  noise per region, names, kinds, the ng scale. Keyed by :func:`regions_key` (the
  calibration entry's key + the ROI records, geometry included), so changing a
  calibration, the plan or any ROI misses: no stale functionals.

Trust: each small entry (``.npz``) carries the SHA-256 of its arrays and metadata and
is refused on any mismatch; each large array (``.npy``) carries its exact byte size and
a sampled digest (``recon.checksum.sampled_digest``: the size and 64 KiB at 32 evenly spaced
offsets, first and last included), so a truncated, resized or partly overwritten file
is refused and rebuilt. A refused entry is ``None`` (a miss), never an error. Writes go
to a temporary name and are renamed, so a reader never sees half an entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from recon.checksum import sampled_digest

__all__ = [
    "LIVE_CACHE_FORMAT",
    "calibration_key",
    "regions_key",
    "save_entry",
    "load_entry",
    "save_array",
    "exclusive",
    "load_array",
]

#: Bump when an entry's content or the maths behind it changes (old entries then miss).
LIVE_CACHE_FORMAT = 1
#: Plan fields that act on the scan only (``recon.operator._SCAN_ONLY_PARAMS``).
_SCAN_ONLY = frozenset({"frames", "average", "background", "positivity", "iterations", "solver"})


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def calibration_key(system_matrix_sha256: str, params: dict) -> str:
    """The calibration entry's key: the calibration file's SHA-256 and the plan's fields
    that shape the selected rows and the operator (``ReconParams.as_dict()``)."""
    plan = {k: v for k, v in params.items() if k not in _SCAN_ONLY}
    return _sha({"format": LIVE_CACHE_FORMAT, "what": "rows", "sha256": system_matrix_sha256, "plan": plan})


def regions_key(calibration_entry_key: str, roi_records: list[dict]) -> str:
    """The regions entry's key: the calibration entry's key and every ROI record as given
    (name, kind and geometry, in order: the functionals' columns follow it)."""
    return _sha({"format": LIVE_CACHE_FORMAT, "what": "regions", "rows": calibration_entry_key, "rois": roi_records})


def _arrays_digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _replace_atomically(folder: Path, target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _savez(fh, payload: dict[str, np.ndarray]) -> None:
    np.savez(fh, **payload)  # type: ignore[arg-type]  # numpy's stub types the keyword arrays as its own options


def save_entry(cache_dir: str | os.PathLike, name: str, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``<cache_dir>/<name>.npz`` atomically: ``arrays`` and ``meta`` (JSON) with their digest."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": LIVE_CACHE_FORMAT, "meta": meta, "digest": _arrays_digest(arrays, meta)}
    payload = {**arrays, "__record__": np.frombuffer(json.dumps(record, sort_keys=True).encode(), dtype=np.uint8)}
    target = folder / f"{name}.npz"
    _replace_atomically(folder, target, lambda fh: _savez(fh, payload))
    return target


def load_entry(cache_dir: str | os.PathLike, name: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """(arrays, meta) of ``<cache_dir>/<name>.npz``, or None when absent, unreadable, of
    another format, or when its content does not match its digest (then rebuild)."""
    path = Path(cache_dir) / f"{name}.npz"
    try:
        data = path.read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            record = json.loads(z["__record__"].tobytes().decode())
            arrays = {k: np.array(z[k]) for k in z.files if k != "__record__"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if not isinstance(record, dict) or record.get("format") != LIVE_CACHE_FORMAT:
        return None
    meta = record.get("meta")
    if not isinstance(meta, dict) or record.get("digest") != _arrays_digest(arrays, meta):
        return None
    return arrays, meta


def save_array(cache_dir: str | os.PathLike, name: str, array: np.ndarray) -> Path:
    """Write ``<name>.npy`` and its ``<name>.json`` record (shape, dtype, size, sampled digest) atomically."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.npy"
    _replace_atomically(folder, target, lambda fh: np.save(fh, array, allow_pickle=False))
    record = {
        "format": LIVE_CACHE_FORMAT,
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "bytes": os.path.getsize(target),
        "sampled_sha256": sampled_digest(target),
    }
    meta = folder / f"{name}.json"
    _replace_atomically(folder, meta, lambda fh: fh.write(json.dumps(record, sort_keys=True).encode()))
    return target


def load_array(cache_dir: str | os.PathLike, name: str, *, mmap: bool = True) -> np.ndarray | None:
    """``<name>.npy`` (memory-mapped read-only by default), or None when absent or when
    its size, shape, dtype or sampled digest differ from its record (then rebuild)."""
    folder = Path(cache_dir)
    path = folder / f"{name}.npy"
    try:
        record = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        if record.get("format") != LIVE_CACHE_FORMAT or os.path.getsize(path) != record.get("bytes"):
            return None
        if sampled_digest(path) != record.get("sampled_sha256"):
            return None
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, AttributeError):
        return None
    if list(array.shape) != record.get("shape") or str(array.dtype) != record.get("dtype"):
        return None
    return array


@contextlib.contextmanager
def exclusive(cache_dir: str | os.PathLike, name: str):
    """Hold ``<cache_dir>/<name>.lock`` exclusively (``flock``: released when the holder
    exits or dies) while an entry is computed, so two processes do not compute it twice."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
