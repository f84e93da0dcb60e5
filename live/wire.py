"""The frames message of protocol ``mpi-live/1`` read from a request body.

Body (``Content-Type: application/vnd.mpi-live.frames``): one line of JSON, ``b"\\n"``,
then the raw samples of ``count`` frames (count x J x C x V of the stream's dtype,
little-endian, C order), or for a spectra stream (header ``payload`` "spectra") their
selected spectra (count x J x C x K_sel complex64, little-endian, C order)::

    {"first_frame": 128, "count": 64, "acquired_at": [...64 floats...], "background": [...64 bools...]}

The body is at most ``MAX_BLOCK_BYTES``, refused from its Content-Length before a byte
is read. Each malformed message gets its own code (400): ``bad_frame_header`` (the JSON
line missing, invalid or of the wrong types or lengths), ``bad_frame_length`` (the
samples are not count x J x C x V x itemsize bytes), ``too_many_frames`` (count over
``MAX_FRAMES_PER_BLOCK`` or the body over ``MAX_BLOCK_BYTES``). What the samples may be
(finite, in order) is the session service's rule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from config.errors import RuleViolation
from config.request_body import RequestBody
from live.services.sessions import MAX_FRAMES_PER_BLOCK
from recon.recording import STORED_DTYPES

FRAMES_CONTENT_TYPE = "application/vnd.mpi-live.frames"
MAX_BLOCK_BYTES = 64 * 2**20
# The JSON line of 512 frames is about 14 kB: this leaves room for any formatting.
MAX_HEADER_LINE_BYTES = 256 * 2**10
_READ_BYTES = 2**20
_KEYS = {"first_frame", "count", "acquired_at", "background"}


@dataclass(frozen=True)
class FramesMessage:
    first_frame: int
    frames: np.ndarray  # (count, J, C, V)
    acquired_at: np.ndarray  # (count,) float64
    background: np.ndarray  # (count,) bool


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _bad(message: str) -> RuleViolation:
    return RuleViolation("bad_frame_header", message)


def _header(line: bytes) -> dict:
    try:
        header = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError):
        raise _bad("The frames message must start with one line of JSON (then a newline).") from None
    if not isinstance(header, dict) or set(header) != _KEYS:
        raise _bad(f"The JSON line must be an object with exactly {', '.join(sorted(_KEYS))}.")
    first, count = header["first_frame"], header["count"]
    for name, value in (("first_frame", first), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(f"{name} must be an integer >= 0, got {value!r}.")
    if count > MAX_FRAMES_PER_BLOCK:
        raise RuleViolation("too_many_frames", f"A block carries at most {MAX_FRAMES_PER_BLOCK} frames, got {count}.")
    if count < 1:
        raise _bad("count must be at least 1.")
    times, flags = header["acquired_at"], header["background"]
    if (
        not isinstance(times, list)
        or len(times) != count
        or any(isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) for t in times)
    ):
        raise _bad(f"acquired_at must be {count} finite numbers (Unix seconds).")
    if not isinstance(flags, list) or len(flags) != count or any(not isinstance(b, bool) for b in flags):
        raise _bad(f"background must be {count} booleans.")
    return header


def read_frames_message(body: RequestBody, *, frame_shape, dtype: str) -> FramesMessage:
    """Read and parse one frames message of a stream of ``frame_shape`` (J, C, V) and ``dtype``."""
    if body.length > MAX_BLOCK_BYTES:
        raise RuleViolation(
            "too_many_frames",
            f"The message is {body.length} bytes (Content-Length); at most {MAX_BLOCK_BYTES}: send fewer frames per block.",
        )
    if body.length == 0:
        raise _bad("The frames message is empty (or has no Content-Length).")
    raw = bytearray()
    while chunk := body.read(_READ_BYTES):
        raw += chunk
    newline = raw.find(b"\n", 0, MAX_HEADER_LINE_BYTES)
    if newline < 0:
        raise _bad("The frames message must start with one line of JSON, then a newline.")
    header = _header(bytes(raw[:newline]))
    count = header["count"]
    stored = np.dtype(STORED_DTYPES[dtype])
    shape = tuple(int(v) for v in frame_shape)
    expected = count * int(np.prod(shape)) * stored.itemsize
    payload = memoryview(raw)[newline + 1 :]
    if len(payload) != expected:
        raise RuleViolation(
            "bad_frame_length",
            f"{count} frames of {' x '.join(map(str, shape))} {dtype} samples are {expected} bytes; "
            f"the message carries {len(payload)}.",
        )
    frames = np.frombuffer(payload, dtype=stored).reshape(count, *shape)
    return FramesMessage(
        first_frame=header["first_frame"],
        frames=frames,
        acquired_at=np.asarray(header["acquired_at"], dtype=np.float64),
        background=np.asarray(header["background"], dtype=bool),
    )
