"""Frames and the stream header from an MDF v2 measurement (h5py only; recon is not imported).

Reads a time-domain measurement, ``/measurement/data`` N x J x C x V (or J x C x V x N with
``isFastFrameAxis`` / the pre-2.0.1 ``isTransposed``), any integer or float sample type, and
hands out frames in acquisition order as the wire dtype of "mpi-live/1". Refused with one
line saying why: files that are not HDF5, truncated or corrupt files, frequency-domain or
compressed data, a frame permutation that is not the identity, shapes that disagree with
the acquisition header, complex samples.

A growing file (``follow``) is reopened by :meth:`MDFSource.refresh` (read-only, SWMR where
the file has it, without HDF5 file locking so the writer keeps its lock).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np

from bridge.protocol import (
    FIELD_PREFIXES,
    MAX_FIELDS,
    MAX_NUMBERS_PER_FIELD,
    REQUIRED_FIELDS,
    ProtocolError,
    frame_duration_s,
)


class MDFSourceError(Exception):
    """The measurement cannot be streamed; the message is one line a person can act on."""


#: numpy sample type in the file -> the wire dtype that holds it exactly.
_WIRE_FOR = {
    "int8": "int16",
    "uint8": "int16",
    "int16": "int16",
    "uint16": "int32",
    "int32": "int32",
    "float16": "float32",
    "float32": "float32",
    "float64": "float64",
    # wider integers: float64 holds every value up to 2**53 exactly (far beyond any ADC)
    "uint32": "float64",
    "int64": "float64",
    "uint64": "float64",
}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _json_value(value: Any) -> Any:
    """An h5py value as JSON (numbers, strings, nested lists), or raise ValueError."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind in "SO" or kind == "U":
            return _nested(value, lambda v: v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v))
        if kind == "b":
            return _nested(value, bool)
        if kind in "iu":
            return _nested(value, int)
        if kind == "f":
            if not np.isfinite(value).all():
                raise ValueError("has NaN or infinite values (JSON cannot carry them)")
            return _nested(value, float)
        raise ValueError(f"has values of type {value.dtype} (complex or compound: not a JSON value)")
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("is not finite")
        return value
    raise ValueError(f"has a value of type {type(value).__name__}")


def _nested(arr: np.ndarray, convert: Any) -> Any:
    if arr.ndim == 0:
        return convert(arr.item())
    return [_nested(a, convert) for a in arr] if arr.ndim > 1 else [convert(v) for v in arr.tolist()]


class MDFSource:
    """An MDF measurement opened for streaming. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike[str], *, growing: bool = False) -> None:
        self.path = os.fspath(path)
        self.growing = growing
        self.skipped_fields: dict[str, str] = {}
        self._h5: h5py.File | None = None
        self._open()
        try:
            self._read_header()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------------------

    def _open(self) -> None:
        path = self.path
        if not os.path.exists(path):
            raise MDFSourceError(f"{path}: no such file")
        if os.path.isdir(path):
            raise MDFSourceError(f"{path}: is a directory, not an MDF file")
        size = os.path.getsize(path)
        if size == 0:
            raise MDFSourceError(f"{path}: empty file (0 bytes), not an MDF file")
        try:
            is_hdf5 = h5py.is_hdf5(path)
        except OSError as exc:
            raise MDFSourceError(f"{path}: cannot read: {_one_line(exc)}") from None
        if not is_hdf5:
            raise MDFSourceError(f"{path}: not an HDF5 file (no HDF5 signature in its {size} bytes)")
        try:
            # SWMR read works on any file; without file locking the scanner's writer keeps its lock.
            self._h5 = h5py.File(path, "r", swmr=True, locking=False)
        except OSError:
            try:
                self._h5 = h5py.File(path, "r", locking=False)
            except OSError as exc:
                detail = _one_line(exc)
                what = "truncated" if "truncated" in detail else "corrupt"
                raise MDFSourceError(f"{path}: {what} HDF5 file ({size} bytes): {detail}") from None

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> MDFSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None:
            raise MDFSourceError(f"{self.path}: the file is closed")
        return self._h5

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        try:
            yield
        except MDFSourceError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise MDFSourceError(f"{self.path}: cannot read {what}: {_one_line(exc)}") from None

    # -- header -------------------------------------------------------------------------

    def _dataset(self, path: str) -> h5py.Dataset | None:
        obj = self.h5.get(path)
        return obj if isinstance(obj, h5py.Dataset) else None

    def _flag(self, *paths: str) -> bool:
        for path in paths:
            ds = self._dataset(path)
            if ds is not None:
                with self._reading(path):
                    return bool(np.asarray(ds[()]).ravel()[0]) if ds.size else False
        return False

    def _read_header(self) -> None:
        with self._reading("the acquisition header"):
            self.fields = self._collect_fields()
        missing = [p for p in REQUIRED_FIELDS if p not in self.fields]
        if missing:
            raise MDFSourceError(f"{self.path}: not a complete MDF v2 measurement: missing {', '.join(missing)}")
        try:
            self.frame_duration_s = frame_duration_s(self.fields)
            j = int(self.fields["/acquisition/numPeriodsPerFrame"])
            c = int(self.fields["/acquisition/receiver/numChannels"])
            v = int(self.fields["/acquisition/receiver/numSamplingPoints"])
        except (ProtocolError, TypeError, ValueError) as exc:
            raise MDFSourceError(f"{self.path}: bad acquisition header: {_one_line(exc)}") from None
        self.frame_shape = (j, c, v)
        uuid = self._dataset("/uuid")
        with self._reading("/uuid"):
            self.measurement_uuid: str | None = _json_value(uuid[()]) if uuid is not None else None
        declared = self.fields.get("/acquisition/numFrames")
        self.declared_frames = int(declared) if isinstance(declared, int) and not isinstance(declared, bool) else 0
        self._check_layout()

    def _collect_fields(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for prefix in FIELD_PREFIXES:
            group = self.h5.get(prefix.rstrip("/"))
            if not isinstance(group, h5py.Group):
                continue

            def visit(name: str, obj: Any, prefix: str = prefix) -> None:
                if isinstance(obj, h5py.Dataset):
                    path = prefix + name
                    try:
                        if obj.size > MAX_NUMBERS_PER_FIELD:
                            raise ValueError(
                                f"has {obj.size} values (the header carries at most {MAX_NUMBERS_PER_FIELD})"
                            )
                        found[path] = _json_value(obj[()])
                    except ValueError as exc:
                        self.skipped_fields[path] = str(exc)

            group.visititems(visit)
        if "/acquisition/numPeriodsPerFrame" not in found and "/acquisition/numPeriods" in found:
            found["/acquisition/numPeriodsPerFrame"] = found["/acquisition/numPeriods"]  # MDF before 2.0.1
        ordered = [p for p in REQUIRED_FIELDS if p in found] + sorted(p for p in found if p not in REQUIRED_FIELDS)
        for path in ordered[MAX_FIELDS:]:
            self.skipped_fields[path] = f"over the header's limit of {MAX_FIELDS} fields"
        return {p: found[p] for p in ordered[:MAX_FIELDS]}

    def _check_layout(self) -> None:
        path = self.path
        ds = self._dataset("/measurement/data")
        if ds is None:
            raise MDFSourceError(f"{path}: no /measurement/data: not an MDF measurement")
        for flag, why in (
            ("/measurement/isFourierTransformed", "frequency-domain data"),
            ("/measurement/isSparsityTransformed", "compressed (sparsity-transformed) data"),
            ("/measurement/isFrequencySelection", "frequency-selected data"),
        ):
            if self._flag(flag):
                raise MDFSourceError(f"{path}: {why}: the live stream carries time-domain frames (N x J x C x V)")
        if ds.ndim != 4:
            raise MDFSourceError(f"{path}: /measurement/data has {ds.ndim} dimensions, a time-domain measurement has 4")
        kind = ds.dtype.kind
        if kind == "c" or ds.dtype.names:
            raise MDFSourceError(f"{path}: /measurement/data holds complex samples: not time-domain raw data")
        name = ds.dtype.name if kind in "iuf" else ""
        if name not in _WIRE_FOR:
            raise MDFSourceError(f"{path}: /measurement/data has sample type {ds.dtype}, not an integer or float type")
        self.file_dtype = np.dtype(name)
        self.dtype = _WIRE_FOR[name]
        self.fast_frame_axis = self._flag("/measurement/isFastFrameAxis", "/measurement/isTransposed")
        shape = tuple(int(s) for s in ds.shape)
        frame_dims = shape[:3] if self.fast_frame_axis else shape[1:]
        if frame_dims != self.frame_shape:
            layout = "J x C x V x N" if self.fast_frame_axis else "N x J x C x V"
            raise MDFSourceError(
                f"{path}: /measurement/data is {'x'.join(map(str, shape))} ({layout}) but the acquisition header "
                f"says J={self.frame_shape[0]} periods, C={self.frame_shape[1]} channels, V={self.frame_shape[2]} samples"
            )
        if self._flag("/measurement/isFramePermutation"):
            perm_ds = self._dataset("/measurement/framePermutation")
            with self._reading("/measurement/framePermutation"):
                perm = np.asarray(perm_ds[()]).ravel() if perm_ds is not None else None
            n = self._data_frames(ds)
            identity0, identity1 = np.arange(n), np.arange(1, n + 1)
            if perm is None or not (np.array_equal(perm, identity0) or np.array_equal(perm, identity1)):
                raise MDFSourceError(
                    f"{path}: the frames are stored permuted (isFramePermutation with a framePermutation that is not "
                    "the identity): the live stream needs acquisition order; undo the permutation first"
                )

    def _data_frames(self, ds: h5py.Dataset) -> int:
        return int(ds.shape[3] if self.fast_frame_axis else ds.shape[0])

    # -- frames -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reopen a growing file so that frames appended since are seen."""
        self.close()
        self._open()

    def available(self) -> int:
        """Frames that can be read now: data frames with their background flag written."""
        with self._reading("/measurement/data"):
            ds = self._dataset("/measurement/data")
            if ds is None:
                raise MDFSourceError(f"{self.path}: /measurement/data disappeared")
            if hasattr(ds, "refresh") and self.growing:
                ds.refresh()
            n = self._data_frames(ds)
            flags = self._dataset("/measurement/isBackgroundFrame")
            if flags is not None:
                if self.growing and hasattr(flags, "refresh"):
                    flags.refresh()
                if flags.ndim != 1:
                    raise MDFSourceError(f"{self.path}: /measurement/isBackgroundFrame is not one-dimensional")
                if flags.shape[0] < n:
                    if not self.growing:
                        raise MDFSourceError(
                            f"{self.path}: /measurement/isBackgroundFrame has {flags.shape[0]} entries for {n} frames"
                        )
                    n = flags.shape[0]  # a writer appends the flag after the data: wait for it
        return n

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames [start, stop) as (n, J, C, V) little-endian wire dtype, and their background flags."""
        with self._reading(f"frames {start}..{stop - 1}"):
            ds = self.h5["/measurement/data"]
            if self.fast_frame_axis:
                raw = np.moveaxis(np.asarray(ds[:, :, :, start:stop]), 3, 0)
            else:
                raw = np.asarray(ds[start:stop])
            flags_ds = self._dataset("/measurement/isBackgroundFrame")
            flags = (
                np.asarray(flags_ds[start:stop]).astype(bool)
                if flags_ds is not None
                else np.zeros(stop - start, dtype=bool)
            )
        if raw.shape[0] != stop - start or flags.shape[0] != stop - start:
            raise MDFSourceError(f"{self.path}: frames {start}..{stop - 1} are not in the file")
        frames = np.ascontiguousarray(raw, dtype=np.dtype(self.dtype).newbyteorder("<"))
        if frames.dtype.kind == "f" and not np.isfinite(frames).all():
            bad = int(start + np.flatnonzero(~np.isfinite(frames).reshape(frames.shape[0], -1).all(axis=1))[0])
            raise MDFSourceError(f"{self.path}: frame {bad} has NaN or infinite samples")
        return frames, flags

    def completion_offsets_s(self, total: int) -> np.ndarray:
        """When each of the first ``total`` frames was complete, in seconds after the acquisition start.

        (n + 1) x frame duration, or, where the file records when its frames were acquired
        (``/measurement/_frameAcquiredAt``, unix seconds: the platform's own recordings), those
        times relative to the first frame's start, so a replay keeps the original pauses.
        """
        regular = (np.arange(total, dtype=np.float64) + 1) * self.frame_duration_s
        ds = self._dataset("/measurement/_frameAcquiredAt")
        if ds is None or ds.ndim != 1 or ds.shape[0] < total or total == 0:
            return regular
        with self._reading("/measurement/_frameAcquiredAt"):
            times = np.asarray(ds[:total], dtype=np.float64)
        if not np.isfinite(times).all() or (np.diff(times) < 0).any():
            self.skipped_fields["/measurement/_frameAcquiredAt"] = (
                "not finite and non-decreasing: frames paced regularly"
            )
            return regular
        return times - times[0] + self.frame_duration_s

    def source_info(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "filename": os.path.basename(self.path), "measurement_uuid": self.measurement_uuid}
