"""The wire format of "mpi-live/1" (docs/live-protocol.md): stream header rules and the
binary frames message.

A frames message is one line of JSON, a newline, then the raw frame bytes::

    {"first_frame": 120, "count": 3, "acquired_at": [...], "background": [...]}\\n<bytes>

The bytes are ``count`` frames of J x C x V samples of the stream's dtype, little-endian,
C order (the MDF time-domain layout N x J x C x V); for a spectra stream (header
``payload`` "spectra") J x C x K_sel complex64 values: the unnormalised rfft of each
period's raw samples at the header's ``frequency_selection`` (1-based bins, see
:func:`select_spectra`). The server implements its own decoder
(it imports nothing from this package); :func:`decode_frames_message` here is the
reference the write-up and the tests use.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

PROTOCOL = "mpi-live/1"
CONTENT_TYPE = "application/vnd.mpi-live.frames"
#: At most this many frames in one message.
MAX_FRAMES_PER_MESSAGE = 512
#: The server refuses a frames body larger than this (checked from Content-Length).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Sample types a stream may carry (little-endian on the wire).
WIRE_DTYPES = ("int16", "int32", "float32", "float64")
#: The type of a spectra stream's values (payload "spectra").
SPECTRA_DTYPE = "complex64"
PAYLOADS = ("samples", "spectra")
#: Frequencies a spectra stream's header may list.
MAX_SELECTED_FREQUENCIES = 2**16
#: MDF groups whose fields the stream header may carry.
FIELD_PREFIXES = ("/study/", "/experiment/", "/scanner/", "/acquisition/", "/tracer/")
MAX_FIELDS = 200
MAX_NUMBERS_PER_FIELD = 4096
REQUIRED_FIELDS = (
    "/acquisition/drivefield/baseFrequency",
    "/acquisition/drivefield/divider",
    "/acquisition/numAverages",
    "/acquisition/numPeriodsPerFrame",
    "/acquisition/receiver/numChannels",
    "/acquisition/receiver/numSamplingPoints",
    "/acquisition/receiver/bandwidth",
)
#: The longest JSON line a decoder reads before it gives up looking for the newline.
MAX_HEADER_LINE_BYTES = 1024 * 1024


class ProtocolError(ValueError):
    """A message or header that breaks the protocol: ``code`` is the server's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FramesMessage:
    first_frame: int
    frames: np.ndarray  # (count, J, C, V) of the stream dtype; (count, J, C, K_sel) for spectra
    acquired_at: list[float]
    background: list[bool]

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])


def wire_dtype(dtype: str) -> np.dtype:
    """The little-endian numpy dtype of a wire dtype name (a sample type or "complex64")."""
    if dtype not in (*WIRE_DTYPES, SPECTRA_DTYPE):
        raise ProtocolError(
            "bad_stream_header", f"dtype must be one of {', '.join((*WIRE_DTYPES, SPECTRA_DTYPE))}, got {dtype!r}"
        )
    return np.dtype(dtype).newbyteorder("<")


def check_frequency_selection(selection: Any, samples: int) -> list[int]:
    """A spectra stream's ``frequency_selection``: 1-based indices into the ``samples // 2 + 1``
    rfft bins, strictly increasing, non-empty, at most :data:`MAX_SELECTED_FREQUENCIES`."""
    k = int(samples) // 2 + 1
    if (
        not isinstance(selection, list)
        or not selection
        or any(isinstance(v, bool) or not isinstance(v, int) for v in selection)
    ):
        raise ProtocolError("bad_frequency_selection", "frequency_selection must be a non-empty list of integers")
    if len(selection) > MAX_SELECTED_FREQUENCIES:
        raise ProtocolError(
            "frequency_selection_too_large", f"at most {MAX_SELECTED_FREQUENCIES} frequencies, got {len(selection)}"
        )
    if any(b <= a for a, b in zip(selection, selection[1:], strict=False)):
        raise ProtocolError("bad_frequency_selection", "frequency_selection must be strictly increasing")
    if selection[0] < 1 or selection[-1] > k:
        raise ProtocolError("frequency_out_of_range", f"frequency_selection must lie in 1..{k} (1-based rfft bins)")
    return [int(v) for v in selection]


def select_spectra(frames: np.ndarray, selection: list[int]) -> np.ndarray:
    """What a spectra stream sends of (n, J, C, V) raw samples: the unnormalised rfft
    (``numpy.fft.rfft``, in float64) of each period's V samples, before any
    ``dataConversionFactor``, at the 1-based bins of ``selection``: (n, J, C, K_sel)
    complex64, little-endian. The convention of MDF's stored spectra (the platform's
    reader applies the conversion factor to them as to samples)."""
    bins = np.asarray(selection, dtype=np.int64) - 1
    spectra = np.fft.rfft(np.asarray(frames, dtype=np.float64), axis=-1)[..., bins]
    return np.ascontiguousarray(spectra, dtype=np.dtype(SPECTRA_DTYPE).newbyteorder("<"))


def _number(fields: dict[str, Any], path: str) -> float:
    value = fields.get(path)
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("bad_stream_header", f"{path} must be a number, got {value!r}")
    return float(value)


def _positive_int(fields: dict[str, Any], path: str) -> int:
    value = _number(fields, path)
    if value != int(value) or value < 1:
        raise ProtocolError("bad_stream_header", f"{path} must be a positive whole number, got {value!r}")
    return int(value)


def _flat_numbers(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for item in value for x in _flat_numbers(item)]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("bad_stream_header", f"expected numbers, got {value!r}")
    return [float(value)]


def frame_shape(fields: dict[str, Any]) -> tuple[int, int, int]:
    """(J, C, V) = (numPeriodsPerFrame, receiver/numChannels, receiver/numSamplingPoints)."""
    return (
        _positive_int(fields, "/acquisition/numPeriodsPerFrame"),
        _positive_int(fields, "/acquisition/receiver/numChannels"),
        _positive_int(fields, "/acquisition/receiver/numSamplingPoints"),
    )


def drive_cycle_s(fields: dict[str, Any]) -> float:
    """/acquisition/drivefield/cycle if given, else lcm(divider) / baseFrequency."""
    if fields.get("/acquisition/drivefield/cycle") is not None:
        cycle = _number(fields, "/acquisition/drivefield/cycle")
    else:
        base = _number(fields, "/acquisition/drivefield/baseFrequency")
        dividers = _flat_numbers(fields.get("/acquisition/drivefield/divider"))
        if not dividers or any(d != int(d) or d < 1 for d in dividers) or base <= 0:
            raise ProtocolError(
                "bad_stream_header",
                "/acquisition/drivefield/divider must be positive whole numbers and baseFrequency positive",
            )
        cycle = math.lcm(*(int(d) for d in dividers)) / base
    if not (math.isfinite(cycle) and cycle > 0):
        raise ProtocolError("bad_stream_header", f"the drive-field cycle must be positive, got {cycle!r}")
    return cycle


def frame_duration_s(fields: dict[str, Any]) -> float:
    """cycle x numAverages x numPeriodsPerFrame: the acquisition time of one frame."""
    return (
        drive_cycle_s(fields)
        * _positive_int(fields, "/acquisition/numAverages")
        * _positive_int(fields, "/acquisition/numPeriodsPerFrame")
    )


def check_header(header: dict[str, Any]) -> None:
    """Raise :class:`ProtocolError` if ``header`` is not a stream header the server accepts."""
    if header.get("protocol") != PROTOCOL:
        raise ProtocolError("bad_stream_header", f"protocol must be {PROTOCOL!r}")
    payload = header.get("payload", "samples")
    if payload not in PAYLOADS:
        raise ProtocolError("unsupported_payload", f"payload must be one of {', '.join(PAYLOADS)}, got {payload!r}")
    dtype = header.get("dtype", "")
    if (payload == "spectra") != (dtype == SPECTRA_DTYPE):
        raise ProtocolError("unsupported_dtype", f"a {payload} stream cannot carry dtype {dtype!r}")
    if (payload == "spectra") != ("frequency_selection" in header):
        raise ProtocolError("bad_frequency_selection", "frequency_selection comes with payload spectra, and only then")
    wire_dtype(dtype)
    started = header.get("started_at")
    if isinstance(started, bool) or not isinstance(started, (int, float)) or not math.isfinite(started):
        raise ProtocolError("bad_stream_header", "started_at must be a finite number (unix seconds)")
    fields = header.get("fields")
    if not isinstance(fields, dict):
        raise ProtocolError("bad_stream_header", "fields must be an object of MDF paths")
    if len(fields) > MAX_FIELDS:
        raise ProtocolError("bad_stream_header", f"at most {MAX_FIELDS} fields, got {len(fields)}")
    for path, value in fields.items():
        if not path.startswith(FIELD_PREFIXES):
            raise ProtocolError("bad_stream_header", f"field {path!r} is outside {', '.join(FIELD_PREFIXES)}")
        if _count_numbers(value) > MAX_NUMBERS_PER_FIELD:
            raise ProtocolError("bad_stream_header", f"field {path} has more than {MAX_NUMBERS_PER_FIELD} values")
    missing = [p for p in REQUIRED_FIELDS if p not in fields]
    if missing:
        raise ProtocolError("bad_stream_header", f"required fields missing: {', '.join(missing)}")
    shape = frame_shape(fields)
    frame_duration_s(fields)
    if payload == "spectra":
        check_frequency_selection(header["frequency_selection"], shape[2])


def _count_numbers(value: Any) -> int:
    if isinstance(value, list):
        return sum(_count_numbers(v) for v in value)
    return 1


def encode_frames_message(
    first_frame: int, frames: np.ndarray, acquired_at: Any, background: Any, *, dtype: str | None = None
) -> bytes:
    """One frames message: the JSON line, b"\\n", the frames' little-endian C-order bytes.

    ``frames`` is (count, J, C, V), or (count, J, C, K_sel) spectra; ``dtype`` (a wire
    dtype name) defaults to the array's own, which must then be a wire dtype.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ProtocolError("bad_frame_header", f"frames must be count x J x C x V, got shape {frames.shape}")
    count = int(frames.shape[0])
    if not 1 <= count <= MAX_FRAMES_PER_MESSAGE:
        raise ProtocolError("too_many_frames", f"count must be 1..{MAX_FRAMES_PER_MESSAGE}, got {count}")
    target = wire_dtype(dtype or frames.dtype.name)
    acquired = [float(t) for t in np.asarray(acquired_at, dtype=np.float64).ravel()]
    flags = [bool(b) for b in np.asarray(background).ravel()]
    if len(acquired) != count or len(flags) != count:
        raise ProtocolError("bad_frame_header", f"acquired_at and background need {count} entries each")
    if not all(math.isfinite(t) for t in acquired):
        raise ProtocolError("bad_frame_header", "acquired_at must be finite")
    if any(b < a for a, b in zip(acquired, acquired[1:], strict=False)):
        raise ProtocolError("bad_frame_header", "acquired_at must be non-decreasing")
    if int(first_frame) < 0:
        raise ProtocolError("bad_frame_header", f"first_frame must be >= 0, got {first_frame}")
    head = json.dumps(
        {"first_frame": int(first_frame), "count": count, "acquired_at": acquired, "background": flags},
        separators=(",", ":"),
        allow_nan=False,
    ).encode("ascii")
    payload = np.ascontiguousarray(frames, dtype=target).tobytes()
    return head + b"\n" + payload


def decode_frames_message(body: bytes, *, frame_shape: tuple[int, int, int], dtype: str) -> FramesMessage:
    """Parse and validate a frames message body; :class:`ProtocolError` with the server's codes.
    ``frame_shape``: (J, C, V), or (J, C, K_sel) of a spectra stream ("complex64")."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError("too_many_frames", f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    newline = body.find(b"\n", 0, MAX_HEADER_LINE_BYTES)
    if newline < 0:
        raise ProtocolError("bad_frame_header", "no newline after the JSON line")
    try:
        head = json.loads(body[:newline])
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_frame_header", f"the JSON line does not parse: {exc}") from None
    if not isinstance(head, dict):
        raise ProtocolError("bad_frame_header", "the JSON line must be an object")
    first, count = head.get("first_frame"), head.get("count")
    for name, value in (("first_frame", first), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError("bad_frame_header", f"{name} must be an integer")
    assert isinstance(first, int) and isinstance(count, int)  # noqa: S101 - narrowing for mypy, checked above
    if first < 0:
        raise ProtocolError("bad_frame_header", "first_frame must be >= 0")
    if count > MAX_FRAMES_PER_MESSAGE:
        raise ProtocolError("too_many_frames", f"count must be at most {MAX_FRAMES_PER_MESSAGE}")
    if count < 1:
        raise ProtocolError("bad_frame_header", "count must be at least 1")
    acquired, flags = head.get("acquired_at"), head.get("background")
    if not isinstance(acquired, list) or len(acquired) != count:
        raise ProtocolError("bad_frame_header", f"acquired_at must be a list of {count} numbers")
    if not isinstance(flags, list) or len(flags) != count or not all(isinstance(b, bool) for b in flags):
        raise ProtocolError("bad_frame_header", f"background must be a list of {count} booleans")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in acquired):
        raise ProtocolError("bad_frame_header", "acquired_at must be finite numbers")
    if any(b < a for a, b in zip(acquired, acquired[1:], strict=False)):
        raise ProtocolError("bad_frame_header", "acquired_at must be non-decreasing")
    target = wire_dtype(dtype)
    j, c, v = frame_shape
    expected = count * j * c * v * target.itemsize
    payload = memoryview(body)[newline + 1 :]
    if len(payload) != expected:
        raise ProtocolError(
            "bad_frame_length", f"{count} frames of {j}x{c}x{v} {dtype} are {expected} bytes, got {len(payload)}"
        )
    frames = np.frombuffer(payload, dtype=target).reshape(count, j, c, v)
    if target.kind in "fc" and not np.isfinite(frames).all():
        raise ProtocolError("non_finite_samples", "frame samples contain NaN or infinity")
    return FramesMessage(int(first), frames, [float(t) for t in acquired], list(flags))
