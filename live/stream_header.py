"""The stream header of protocol ``mpi-live/1`` (docs/live-protocol.md), validated.

A header is JSON::

    {"protocol": "mpi-live/1", "dtype": "int16", "started_at": 1767225600.0,
     "source": {"kind": "replay", "filename": "scan.mdf", "measurement_uuid": null},
     "fields": {"/acquisition/drivefield/baseFrequency": 2.5e6, ...}}

``fields`` are MDF v2 paths (under /study/, /experiment/, /scanner/, /acquisition/,
/tracer/ only) to JSON values copied from the scanner's measurement; they become the
recording's header. Optional ``payload``: "samples" (the default: time-domain samples of
``dtype``) or "spectra" (``dtype`` "complex64" and ``frequency_selection``, the 1-based
rfft bins the frames carry: a frame is then (J, C, K_sel) complex spectra, see
recon.live.StreamLayout). Every refusal is a ``RuleViolation`` with a code of its own (all 400:
the header itself is wrong). What the stream header decides: the frame shape
(J, C, V) = (numPeriodsPerFrame, receiver/numChannels, receiver/numSamplingPoints), or
(J, C, K_sel) for spectra, the
sample type, a frame's duration (drive-field cycle x numAverages x J), and the drive
field the system matrix is matched and checked on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from config.errors import RuleViolation
from recon import live as live_engine
from recon.live import LiveStreamError, StreamLayout
from recon.mdf import MDFError, to_storable
from recon.recording import FRAME_DTYPES, SPECTRA_DTYPES, STORED_DTYPES

PROTOCOL = "mpi-live/1"
PAYLOADS = ("samples", "spectra")
# The stream header's fields: the engine's rules (recon.live), one home for both.
ALLOWED_PREFIXES = live_engine.ALLOWED_PREFIXES
MAX_FIELDS = live_engine.MAX_FIELDS
MAX_FIELD_NUMBERS = live_engine.MAX_NUMBERS_PER_FIELD  # numbers (strings, bools) in one field's value
MAX_STRING_CHARACTERS = 65536  # in one string of a field
MAX_NESTING = 6
REQUIRED_FIELDS = live_engine.REQUIRED_FIELDS
SOURCE_KINDS = ("replay", "follow", "scanner")
# One frame must fit in one frames message (MAX_BLOCK_BYTES of live.wire) and in the live
# engine's limits (recon.live: the 3D Bruker frame is 161,568 samples).
MAX_FRAME_BYTES = 64 * 2**20
MAX_FRAME_SAMPLES = 2**24
MAX_PERIODS, MAX_CHANNELS, MAX_SAMPLING_POINTS = 2**16, 64, 2**22

# Codes of the refusals (each 400; config.api_errors.STATUS_BY_CODE).
HEADER_CODES = (
    "bad_stream_header",
    "unsupported_protocol",
    "unsupported_dtype",
    "field_not_allowed",
    "too_many_fields",
    "field_too_large",
    "required_field_missing",
    "invalid_field_value",
    "frame_too_large",
    "unsupported_payload",
    "bad_frequency_selection",
    "frequency_out_of_range",
    "frequency_selection_too_large",
)


@dataclass(frozen=True)
class StreamHeader:
    protocol: str
    dtype: str
    started_at: float
    source: dict
    fields: dict
    frame_shape: tuple[int, int, int]
    frame_duration_s: float
    base_frequency_hz: float
    dividers: tuple[int, ...]
    drive_amplitudes_t: tuple[float, ...]
    bandwidth_hz: float
    num_sampling_points: int = 0
    payload: str = "samples"
    frequency_selection: tuple[int, ...] | None = None  # 1-based rfft bins (spectra)

    @property
    def receive_channels(self) -> int:
        return self.frame_shape[1]

    @property
    def sampling_points(self) -> int:
        return self.num_sampling_points or self.frame_shape[2]

    def as_json(self) -> dict:
        """The header as accepted and stored (``LiveSession.header``); a samples header is
        stored without ``payload`` (as before spectra existed)."""
        stored: dict = {
            "protocol": self.protocol,
            "dtype": self.dtype,
            "started_at": self.started_at,
            "source": self.source,
            "fields": self.fields,
        }
        if self.payload == "spectra":
            stored["payload"] = self.payload
            stored["frequency_selection"] = list(self.frequency_selection or ())
        return stored

    def acquisition(self) -> dict:
        """The drive-field settings as ``imaging.processing`` reads them from a scan file
        (what ``imaging.services.scanners.match_system_matrix`` matches on)."""
        return {
            "base_frequency_hz": self.base_frequency_hz,
            "dividers": list(self.dividers),
            "drive_amplitudes_t": list(self.drive_amplitudes_t),
            "receive_channels": self.receive_channels,
            "sampling_points": self.sampling_points,
        }


class _TooLarge(ValueError):
    pass


def _count_leaves(value: Any, depth: int = 0) -> int:
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, list):
        return sum(_count_leaves(v, depth + 1) for v in value)
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARACTERS:
            raise _TooLarge(f"a string of {len(value)} characters (at most {MAX_STRING_CHARACTERS})")
        return 1
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a finite number")
        return 1
    raise ValueError(f"{type(value).__name__} is not a number, string, bool or list")


def _check_fields(fields: Any) -> dict:
    if not isinstance(fields, dict):
        raise RuleViolation("bad_stream_header", "fields must be an object of MDF paths to values.", field="fields")
    if len(fields) > MAX_FIELDS:
        raise RuleViolation(
            "too_many_fields", f"The header has {len(fields)} fields; at most {MAX_FIELDS}.", field="fields"
        )
    for key, value in fields.items():
        if not key.startswith(ALLOWED_PREFIXES) or len(key) > 200 or "//" in key or key.endswith("/"):
            raise RuleViolation(
                "field_not_allowed",
                f"Field {key[:200]!r} is not allowed: header fields are MDF paths under {', '.join(ALLOWED_PREFIXES)}.",
                field="fields",
            )
        try:
            leaves = _count_leaves(value)
        except _TooLarge as exc:
            raise RuleViolation("field_too_large", f"Field {key}: {exc}.", field="fields") from None
        except ValueError as exc:
            raise RuleViolation("invalid_field_value", f"Field {key}: {exc}.", field="fields") from None
        if leaves > MAX_FIELD_NUMBERS:
            raise RuleViolation(
                "field_too_large",
                f"Field {key} holds {leaves} values; at most {MAX_FIELD_NUMBERS} per field.",
                field="fields",
            )
        if value is None:
            raise RuleViolation("invalid_field_value", f"Field {key} is null.", field="fields")
        try:
            stored = to_storable(key, value)
        except (MDFError, ValueError, TypeError):
            stored = None
        if stored is None or stored.dtype.kind == "O":
            raise RuleViolation(
                "invalid_field_value",
                f"Field {key} cannot be stored in MDF: lists must be regular (same lengths) and of one kind.",
                field="fields",
            )
    missing = [key for key in REQUIRED_FIELDS if key not in fields]
    if missing:
        raise RuleViolation("required_field_missing", f"The header lacks {', '.join(missing)}.", field="fields")
    return fields


def _number(fields: dict, key: str, *, integer: bool) -> float:
    value = fields[key]
    while isinstance(value, list) and len(value) == 1:  # [2.5e6] as well as 2.5e6
        value = value[0]
    kind = "positive whole number" if integer else "positive number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleViolation("invalid_field_value", f"{key} must be one {kind}.", field="fields")
    if not value > 0 or (integer and float(value) != int(value)):
        raise RuleViolation("invalid_field_value", f"{key} must be a {kind}, got {value!r}.", field="fields")
    return float(value)


def parse_stream_header(header: Any) -> StreamHeader:
    """Validate a stream header (parsed JSON); raise ``RuleViolation`` with the code of
    what is wrong, else return what the session needs of it."""
    if not isinstance(header, dict):
        raise RuleViolation("bad_stream_header", "The stream header must be a JSON object.")
    unknown = sorted(
        set(header) - {"protocol", "dtype", "started_at", "source", "fields", "payload", "frequency_selection"}
    )
    if unknown:
        raise RuleViolation("bad_stream_header", f"Unknown header keys: {', '.join(unknown)}.", field=unknown[0])
    if header.get("protocol") != PROTOCOL:
        raise RuleViolation(
            "unsupported_protocol",
            f"protocol {header.get('protocol')!r} is not supported: this server speaks {PROTOCOL}.",
            field="protocol",
        )
    payload = header.get("payload", "samples")
    if payload not in PAYLOADS:
        raise RuleViolation(
            "unsupported_payload",
            f"payload {payload!r} is not supported: one of {', '.join(PAYLOADS)}.",
            field="payload",
        )
    spectra = payload == "spectra"
    if spectra and "frequency_selection" not in header:
        raise RuleViolation(
            "bad_frequency_selection",
            "A spectra stream's header lists the rfft bins it carries: frequency_selection (1-based).",
            field="frequency_selection",
        )
    if not spectra and "frequency_selection" in header:
        raise RuleViolation(
            "bad_frequency_selection",
            'frequency_selection belongs to a spectra stream: send payload "spectra" with it, or drop it.',
            field="frequency_selection",
        )
    dtype_value = header.get("dtype")
    allowed = SPECTRA_DTYPES if spectra else FRAME_DTYPES
    if not isinstance(dtype_value, str) or dtype_value not in allowed:
        raise RuleViolation(
            "unsupported_dtype",
            f"dtype {dtype_value!r} is not supported"
            + (" for spectra: " if spectra else ": one of ")
            + f"{', '.join(allowed)} (little-endian).",
            field="dtype",
        )
    dtype: str = dtype_value
    started_at = header.get("started_at")
    if isinstance(started_at, bool) or not isinstance(started_at, int | float) or not math.isfinite(started_at):
        raise RuleViolation(
            "bad_stream_header", "started_at must be the stream's start in Unix seconds.", field="started_at"
        )
    source = header.get("source")
    if (
        not isinstance(source, dict)
        or set(source) - {"kind", "filename", "measurement_uuid"}
        or source.get("kind") not in SOURCE_KINDS
        or not isinstance(source.get("filename"), str)
        or len(source["filename"]) > 500
        or not isinstance(source.get("measurement_uuid"), str | type(None))
        or len(source.get("measurement_uuid") or "") > 100
    ):
        raise RuleViolation(
            "bad_stream_header",
            f"source must be {{'kind': one of {', '.join(SOURCE_KINDS)}, 'filename': str, "
            "'measurement_uuid': str or null}.",
            field="source",
        )
    fields = _check_fields(header.get("fields"))
    base = _number(fields, "/acquisition/drivefield/baseFrequency", integer=False)
    bandwidth = _number(fields, "/acquisition/receiver/bandwidth", integer=False)
    averages = int(_number(fields, "/acquisition/numAverages", integer=True))
    shape = (
        int(_number(fields, "/acquisition/numPeriodsPerFrame", integer=True)),
        int(_number(fields, "/acquisition/receiver/numChannels", integer=True)),
        int(_number(fields, "/acquisition/receiver/numSamplingPoints", integer=True)),
    )
    divider = np.asarray(fields["/acquisition/drivefield/divider"])
    if divider.dtype.kind not in "iu" or divider.size == 0 or (divider <= 0).any():
        raise RuleViolation(
            "invalid_field_value",
            "/acquisition/drivefield/divider must be positive whole numbers (D x F).",
            field="fields",
        )
    divider = divider.reshape(divider.shape[0] if divider.ndim else 1, -1)
    dividers = tuple(int(d) for d in divider[:, 0])
    cycle = fields.get("/acquisition/drivefield/cycle")
    if cycle is not None:
        cycle_s = _number(fields, "/acquisition/drivefield/cycle", integer=False)
    else:
        cycle_s = math.lcm(*dividers) / base
    strength = fields.get("/acquisition/drivefield/strength")
    amplitudes: tuple[float, ...] = ()
    if strength is not None:
        arr = np.asarray(strength)
        if arr.dtype.kind not in "iuf":
            raise RuleViolation(
                "invalid_field_value", "/acquisition/drivefield/strength must be numbers (J x D x F).", field="fields"
            )
        arr = arr.astype(float)
        while arr.ndim < 3:
            arr = arr[np.newaxis] if arr.ndim == 2 else arr[..., np.newaxis]
        amplitudes = tuple(float(a) for a in arr[0, :, 0])
    for (name, limit), size in zip(
        (("numPeriodsPerFrame", MAX_PERIODS), ("receiver/numChannels", MAX_CHANNELS)), shape[:2], strict=True
    ):
        if size > limit:
            raise RuleViolation("frame_too_large", f"/acquisition/{name} {size} is over {limit}.", field="fields")
    if shape[2] > MAX_SAMPLING_POINTS or shape[0] * shape[1] * shape[2] > MAX_FRAME_SAMPLES:
        raise RuleViolation(
            "frame_too_large",
            f"A frame of {shape[0]} x {shape[1]} x {shape[2]} samples is over the limits "
            f"({MAX_SAMPLING_POINTS} sampling points, {MAX_FRAME_SAMPLES} samples per frame).",
            field="fields",
        )
    conversion = fields.get("/acquisition/receiver/dataConversionFactor")
    if conversion is not None:
        conv = np.asarray(conversion)
        if conv.dtype.kind not in "iuf" or conv.size != 2 * shape[1] or (conv.reshape(-1, 2)[:, 0] == 0).any():
            raise RuleViolation(
                "invalid_field_value",
                "/acquisition/receiver/dataConversionFactor must be numChannels x 2 numbers (a != 0, b).",
                field="fields",
            )
    selection = None
    if spectra:  # the engine's rule (recon.live), one home for both
        try:
            selection = tuple(
                int(k) + 1 for k in live_engine.parse_frequency_selection(header["frequency_selection"], shape[2])
            )
        except LiveStreamError as exc:
            raise RuleViolation(exc.code, exc.message, field="frequency_selection") from None
    wire_shape = shape if selection is None else (shape[0], shape[1], len(selection))
    frame_bytes = int(np.prod(wire_shape)) * np.dtype(STORED_DTYPES[dtype]).itemsize
    if frame_bytes > MAX_FRAME_BYTES:
        raise RuleViolation(
            "frame_too_large",
            f"One frame of {wire_shape[0]} x {wire_shape[1]} x {wire_shape[2]} {dtype} values is {frame_bytes} bytes; "
            f"at most {MAX_FRAME_BYTES}.",
            field="fields",
        )
    try:  # the live engine parses the same fields: what it refuses, the session refuses now
        StreamLayout.from_fields(fields, dtype, None if selection is None else header["frequency_selection"])
    except LiveStreamError as exc:
        raise RuleViolation(exc.code, exc.message, field="fields") from None
    return StreamHeader(
        protocol=PROTOCOL,
        dtype=dtype,
        started_at=float(started_at),
        source={
            "kind": source["kind"],
            "filename": source["filename"],
            "measurement_uuid": source.get("measurement_uuid"),
        },
        fields=fields,
        frame_shape=wire_shape,
        frame_duration_s=cycle_s * averages * shape[0],
        base_frequency_hz=base,
        dividers=dividers,
        drive_amplitudes_t=amplitudes,
        bandwidth_hz=bandwidth,
        num_sampling_points=shape[2],
        payload=payload,
        frequency_selection=selection,
    )


def system_matrix_mismatch(header: StreamHeader, system_matrix) -> str:
    """Why ``header``'s stream cannot be reconstructed with ``system_matrix`` (an
    ``imaging.models.SystemMatrix``), or "": the checks the offline pipeline makes of a
    scan and its calibration (recon.inputs.check_compatible: receive channels, sampling
    points, base frequency, dividers), on what the library recorded of the calibration."""
    k = header.sampling_points // 2 + 1
    checks = (
        ("receive channels", system_matrix.receive_channels, header.receive_channels),
        ("frequencies (numSamplingPoints // 2 + 1)", system_matrix.frequencies_count, k),
        ("base frequency (Hz)", float(system_matrix.base_frequency_hz), header.base_frequency_hz),
        ("dividers", [int(d) for d in system_matrix.dividers], list(header.dividers)),
    )
    for name, expected, got in checks:
        if expected != got:
            return (
                f"The stream does not match system matrix {system_matrix.name!r} (#{system_matrix.pk}): "
                f"{name} {got} in the stream, {expected} in the calibration."
            )
    return ""
