"""Recording a live stream: an MDF v2 measurement file that grows frame by frame.

The file is a plain time-domain measurement (``/measurement/data`` N x J x C x V, the
sample type the scanner sent, little-endian), readable by :class:`recon.mdf.MDFFile`
and the offline pipeline exactly like a file written at the end of a scan. What is
different is how it is written:

- ``/measurement/data`` is chunked with an unlimited frame axis (``maxshape`` None on N),
  and so are ``/measurement/isBackgroundFrame`` and ``/measurement/_frameAcquiredAt``
  (the bridge's wall clock when each frame was complete, Unix seconds, float64; the
  leading underscore marks a project extension, which MDF readers ignore);
- the injection marks a clinician entered (:meth:`MDFStreamWriter.write_marks`, at the
  end of the session): ``/measurement/_marks`` (kind strings, fixed-length UTF-8 as MDF
  stores strings), ``/measurement/_markFrames`` (int64: the next frame index when the
  mark was entered, -1 before the first frame) and ``/measurement/_markTimes`` (float64:
  the server's Unix seconds), also project extensions;
- ``/acquisition/numFrames`` equals N after every :meth:`MDFStreamWriter.append`;
- every append ends with an HDF5 flush and an ``fsync`` of the file, so a frame the
  caller acknowledged after ``append`` returned survives a crash of the process.

The acquisition header (``fields``: MDF paths -> values, as a stream header carries
them) is converted with :func:`recon.mdf.to_storable`, the converter of
:func:`recon.mdf.write_mdf`, so a stream replayed from a file stores its fields with the
types the file had. ``/version``, ``/uuid``, ``/time`` and the required general fields
are filled in as ``write_mdf`` does; the measurement flags say time domain, not Fourier
transformed, no frequency selection, no frame permutation.

A stream of selected spectra (``frequency_selection`` given, dtype "complex64") is
recorded in the frequency domain instead: ``/measurement/data`` N x J x C x K_sel
complex64, ``/measurement/isFourierTransformed`` and ``isFrequencySelection`` set and
``/measurement/frequencySelection`` the 1-based indices into the V/2+1 rfft bins (MDF's
convention, as MPIFiles writes it). The spectra are the unnormalised rfft of the raw
samples of each period (``numpy.fft.rfft``, before ``dataConversionFactor``), which is
what :meth:`recon.mdf.MDFFile.spectra` expects of stored spectra, so the offline pipeline
reads the recording like the time-domain recording of the same frames.
"""

from __future__ import annotations

import hashlib
import os
import uuid as _uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import h5py
import numpy as np

from recon.mdf import GENERAL_DEFAULTS, RAW_MEASUREMENT_FLAGS, MDFError, to_storable

__all__ = [
    "FRAME_DTYPES",
    "SPECTRA_DTYPES",
    "STORED_DTYPES",
    "MDFStreamWriter",
    "RecordingError",
    "chain_digest",
    "frames_sha256",
]

#: Sample types a stream of time-domain samples may carry, as stored (little-endian).
FRAME_DTYPES = {"int16": "<i2", "int32": "<i4", "float32": "<f4", "float64": "<f8"}
#: The type of a stream of selected spectra (payload "spectra"), as stored (little-endian).
SPECTRA_DTYPES = {"complex64": "<c8"}
#: Every type a recording's /measurement/data may have.
STORED_DTYPES = {**FRAME_DTYPES, **SPECTRA_DTYPES}

#: Fields the writer owns: a stream header cannot set them.
_OWNED = (
    "/version",
    "/uuid",
    "/time",
    "/acquisition/numFrames",
)
_MEASUREMENT_FLAGS = RAW_MEASUREMENT_FLAGS
_DATA = "/measurement/data"
_BACKGROUND = "/measurement/isBackgroundFrame"
_ACQUIRED_AT = "/measurement/_frameAcquiredAt"
_NUM_FRAMES = "/acquisition/numFrames"
_FREQUENCY_SELECTION = "/measurement/frequencySelection"
_MARKS = "/measurement/_marks"
_MARK_FRAMES = "/measurement/_markFrames"
_MARK_TIMES = "/measurement/_markTimes"
# A chunk of /measurement/data holds whole frames, about this many bytes.
_CHUNK_TARGET_BYTES = 1 * 2**20


class RecordingError(MDFError):
    """The recording cannot be created, reopened or appended to as asked."""


def frames_sha256(frames: np.ndarray) -> str:
    """SHA-256 (hex) of frames' bytes as stored: C order, little-endian."""
    arr = np.ascontiguousarray(frames)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def chain_digest(previous: str, chunk_sha256: str) -> str:
    """The chained digest after a chunk: SHA-256 of the previous chained digest (hex, "" for
    the first chunk) followed by the chunk's SHA-256 (hex), as ASCII."""
    return hashlib.sha256(f"{previous}{chunk_sha256}".encode("ascii")).hexdigest()


class MDFStreamWriter:
    """Create a growing MDF v2 measurement at ``path`` (refused when it exists).

    Parameters
    ----------
    path : str or os.PathLike
    fields : mapping of str to value
        MDF paths (``/study/``, ``/experiment/``, ``/scanner/``, ``/acquisition/``,
        ``/tracer/``) to JSON-like values (numbers, strings, bools, nested lists) or arrays.
        ``/acquisition/numFrames`` and the root fields are the writer's own and ignored.
    frame_shape : (J, C, V), or (J, C, K_sel) for spectra
    dtype : "int16", "int32", "float32" or "float64"; "complex64" for spectra
    frequency_selection : sequence of int, optional
        Spectra only: the 1-based rfft bins (1..V/2+1) stored, strictly increasing,
        ``K_sel`` of them.

    Use :meth:`reopen` to append to an existing recording (one request per block).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fields: Mapping[str, Any],
        frame_shape: Sequence[int],
        dtype: str,
        frequency_selection: Sequence[int] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        shape = tuple(int(v) for v in frame_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise RecordingError(f"frame_shape must be three positive sizes (J, C, V), got {tuple(frame_shape)}")
        selection = None if frequency_selection is None else np.asarray(frequency_selection, dtype=np.int64)
        if selection is None:
            if dtype not in FRAME_DTYPES:
                raise RecordingError(f"dtype must be one of {', '.join(FRAME_DTYPES)}, got {dtype!r}")
        else:
            if dtype not in SPECTRA_DTYPES:
                raise RecordingError(f"spectra are stored as {', '.join(SPECTRA_DTYPES)}, got {dtype!r}")
            if (
                selection.ndim != 1
                or selection.size != shape[2]
                or selection.min() < 1
                or (np.diff(selection) <= 0).any()
            ):
                raise RecordingError(
                    f"frequency_selection must be {shape[2]} strictly increasing 1-based bins, got {selection.tolist()[:20]}"
                )
        if os.path.exists(self.path):
            raise RecordingError(f"{self.path} exists: reopen it to append")
        all_fields: dict[str, Any] = {
            "/version": "2.1.0",
            "/uuid": str(_uuid.uuid4()),
            "/time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        all_fields.update(GENERAL_DEFAULTS)
        for key, value in fields.items():
            if not key.startswith("/") or key.startswith("/measurement/"):
                raise RecordingError(f"field {key!r} cannot be set by a stream header")
            if key not in _OWNED:
                all_fields[key] = value
        all_fields.setdefault("/study/uuid", str(_uuid.uuid4()))
        all_fields.setdefault("/experiment/uuid", str(_uuid.uuid4()))
        all_fields.update(_MEASUREMENT_FLAGS)
        if selection is not None:
            all_fields["/measurement/isFourierTransformed"] = True
            all_fields["/measurement/isFrequencySelection"] = True
        stored = np.dtype(STORED_DTYPES[dtype])
        frame_bytes = int(np.prod(shape)) * stored.itemsize
        per_chunk = max(1, _CHUNK_TARGET_BYTES // frame_bytes)
        h5 = h5py.File(self.path, "x")
        try:
            for key in sorted(all_fields):
                value = all_fields[key]
                if value is not None:
                    h5.create_dataset(key, data=to_storable(key, value))
            h5.create_dataset(_NUM_FRAMES, data=np.int64(0))
            if selection is not None:
                h5.create_dataset(_FREQUENCY_SELECTION, data=selection.astype("<i8"))
            h5.create_dataset(
                _DATA, shape=(0, *shape), maxshape=(None, *shape), dtype=stored, chunks=(per_chunk, *shape)
            )
            h5.create_dataset(_BACKGROUND, shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(4096,))
            h5.create_dataset(_ACQUIRED_AT, shape=(0,), maxshape=(None,), dtype="<f8", chunks=(4096,))
            self._durable(h5)
        except BaseException:
            h5.close()
            os.remove(self.path)
            raise
        self._h5: h5py.File | None = h5
        self.frame_shape: tuple[int, ...] = shape
        self.dtype = dtype

    @classmethod
    def reopen(cls, path: str | os.PathLike) -> MDFStreamWriter:
        """Open an existing recording to append to it."""
        self = cls.__new__(cls)
        self.path = os.fspath(path)
        try:
            h5 = h5py.File(self.path, "r+")
        except (OSError, FileNotFoundError) as exc:
            raise RecordingError(f"{self.path}: cannot reopen the recording: {exc}") from None
        try:
            data = h5[_DATA]
            if not isinstance(data, h5py.Dataset) or data.maxshape[0] is not None or data.ndim != 4:
                raise RecordingError(f"{self.path}: /measurement/data is not an extendable N x J x C x V dataset")
            names = {np.dtype(v): k for k, v in STORED_DTYPES.items()}
            if data.dtype not in names:
                raise RecordingError(f"{self.path}: /measurement/data has samples of {data.dtype}")
            self.dtype = names[data.dtype]
            self.frame_shape = tuple(int(v) for v in data.shape[1:])
            for name in (_BACKGROUND, _ACQUIRED_AT, _NUM_FRAMES):
                if name not in h5:
                    raise RecordingError(f"{self.path}: {name} is missing: not a recording")
        except BaseException:
            h5.close()
            raise
        self._h5 = h5
        return self

    # -- context manager ---------------------------------------------------- #

    def __enter__(self) -> MDFStreamWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def h5(self) -> h5py.File:
        if self._h5 is None or not self._h5.id.valid:
            raise RecordingError(f"{self.path}: the recording is closed")
        return self._h5

    @property
    def num_frames(self) -> int:
        """N, the frames in the file."""
        return int(self.h5[_DATA].shape[0])

    def append(
        self,
        frames: np.ndarray,
        acquired_at: np.ndarray | list[float],
        is_background: np.ndarray | list[bool],
        *,
        at: int | None = None,
    ) -> int:
        """Write ``frames`` (n, J, C, V) after the last frame, or from index ``at`` (<= N:
        frames from ``at`` on are replaced, the file cut there first, so that it holds
        exactly what the caller acknowledged). Flushed and fsynced before it returns.

        Returns N, the frames in the file afterwards."""
        h5 = self.h5
        arr = np.asarray(frames)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != self.frame_shape:
            raise RecordingError(f"frames must be (n, {', '.join(map(str, self.frame_shape))}), got {arr.shape}")
        n = arr.shape[0]
        times = np.asarray(acquired_at, dtype=np.float64).reshape(-1)
        background = np.asarray(is_background, dtype=bool).reshape(-1)
        if times.size != n or background.size != n:
            raise RecordingError(f"{n} frames need {n} acquisition times and background flags")
        data, bg, when = h5[_DATA], h5[_BACKGROUND], h5[_ACQUIRED_AT]
        start = data.shape[0] if at is None else int(at)
        if not 0 <= start <= data.shape[0]:
            raise RecordingError(f"cannot write from frame {start}: the file holds {data.shape[0]}")
        end = start + n
        for ds in (data, bg, when):
            ds.resize(end, axis=0)
        if n:
            data[start:end] = arr.astype(data.dtype, copy=False)
            bg[start:end] = background.astype(np.int8)
            when[start:end] = times
        h5[_NUM_FRAMES][()] = np.int64(end)
        self._durable(h5)
        return end

    def truncate(self, num_frames: int) -> None:
        """Keep only the first ``num_frames`` frames (<= N), durably."""
        shape = (0, *self.frame_shape)
        self.append(np.zeros(shape, self.h5[_DATA].dtype), [], [], at=num_frames)

    def write_marks(self, kinds: Sequence[str], frames: Sequence[int | None], times: Sequence[float]) -> None:
        """Write the injection marks (replacing any written before), durably: ``kinds``
        (strings), ``frames`` (the next frame index when entered; None: before the first
        frame, stored as -1) and ``times`` (Unix seconds), one entry each per mark."""
        n = len(kinds)
        if len(frames) != n or len(times) != n:
            raise RecordingError(f"{n} marks need {n} frames and {n} times")
        if not all(isinstance(k, str) and k for k in kinds):
            raise RecordingError("a mark's kind is a non-empty string")
        stored_times = np.asarray(times, dtype="<f8").reshape(n)
        if not np.isfinite(stored_times).all():
            raise RecordingError("mark times must be finite Unix seconds")
        h5 = self.h5
        for name in (_MARKS, _MARK_FRAMES, _MARK_TIMES):
            if name in h5:
                del h5[name]
        h5.create_dataset(_MARKS, data=to_storable(_MARKS, list(kinds)) if n else np.zeros(0, dtype="S1"))
        h5.create_dataset(_MARK_FRAMES, data=np.array([-1 if f is None else int(f) for f in frames], dtype="<i8"))
        h5.create_dataset(_MARK_TIMES, data=stored_times)
        self._durable(h5)

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as stored (for checksums of what is on disk)."""
        return np.asarray(self.h5[_DATA][start:stop])

    def close(self) -> None:
        """Flush, fsync and close (idempotent)."""
        if self._h5 is not None and self._h5.id.valid:
            self._durable(self._h5)
            self._h5.close()
        self._h5 = None

    @staticmethod
    def _durable(h5: h5py.File) -> None:
        h5.flush()
        os.fsync(h5.id.get_vfd_handle())
