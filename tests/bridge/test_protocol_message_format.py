"""The frames message of mpi-live/1 byte for byte, its decoder's error codes, and the frame
duration rule (cycle x numAverages x numPeriodsPerFrame, cycle from lcm(divider) if absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bridge.protocol import (
    MAX_FRAMES_PER_MESSAGE,
    ProtocolError,
    check_header,
    decode_frames_message,
    encode_frames_message,
    frame_duration_s,
)

SHAPE = (2, 3, 4)


def _frames(n=3, dtype="int16"):
    return (np.arange(n * 24).reshape(n, *SHAPE) - 30).astype(dtype)


def test_the_message_is_a_json_line_then_little_endian_c_order_samples():
    frames = _frames()
    body = encode_frames_message(7, frames, [1.5, 1.5, 2.25], [True, False, False])

    line, _, payload = body.partition(b"\n")
    assert json.loads(line) == {
        "first_frame": 7,
        "count": 3,
        "acquired_at": [1.5, 1.5, 2.25],
        "background": [True, False, False],
    }
    assert payload == frames.astype("<i2").tobytes(order="C")
    assert payload[:2] == (-30).to_bytes(2, "little", signed=True)


@pytest.mark.parametrize("dtype", ["int16", "int32", "float32", "float64"])
def test_encode_then_decode_gives_the_frames_back(dtype):
    frames = _frames(5, dtype)
    body = encode_frames_message(
        0, frames.astype(np.dtype(dtype).newbyteorder(">")), np.arange(5.0), [0] * 5, dtype=dtype
    )

    message = decode_frames_message(body, frame_shape=SHAPE, dtype=dtype)

    assert message.first_frame == 0 and message.count == 5
    np.testing.assert_array_equal(message.frames, frames)
    assert message.background == [False] * 5 and message.acquired_at == [0.0, 1.0, 2.0, 3.0, 4.0]


def _body(head: dict, payload: bytes) -> bytes:
    return json.dumps(head).encode() + b"\n" + payload


GOOD = {"first_frame": 0, "count": 1, "acquired_at": [1.0], "background": [False]}
ONE = _frames(1, "float32").tobytes()


@pytest.mark.parametrize(
    "body, code",
    [
        (b"no newline at all", "bad_frame_header"),
        (b"{not json\n" + ONE, "bad_frame_header"),
        (b"[1, 2]\n" + ONE, "bad_frame_header"),
        (_body({**GOOD, "count": "1"}, ONE), "bad_frame_header"),
        (_body({**GOOD, "first_frame": -1}, ONE), "bad_frame_header"),
        (_body({**GOOD, "count": 0}, b""), "bad_frame_header"),
        (_body({**GOOD, "count": MAX_FRAMES_PER_MESSAGE + 1}, ONE), "too_many_frames"),
        (_body({**GOOD, "acquired_at": []}, ONE), "bad_frame_header"),
        (_body({**GOOD, "background": [0]}, ONE), "bad_frame_header"),
        (
            _body({**GOOD, "count": 2, "acquired_at": [2.0, 1.0], "background": [False] * 2}, ONE * 2),
            "bad_frame_header",
        ),
        (_body(GOOD, ONE[:-1]), "bad_frame_length"),
        (_body(GOOD, ONE + b"\0"), "bad_frame_length"),
        (_body(GOOD, np.full(SHAPE, np.nan, np.float32).tobytes()), "non_finite_samples"),
    ],
)
def test_each_bad_message_has_its_code(body, code):
    with pytest.raises(ProtocolError) as info:
        decode_frames_message(body, frame_shape=SHAPE, dtype="float32")
    assert info.value.code == code


def test_encode_refuses_what_the_server_would_refuse():
    with pytest.raises(ProtocolError, match="non-decreasing"):
        encode_frames_message(0, _frames(2), [2.0, 1.0], [False, False])
    with pytest.raises(ProtocolError, match="count must be 1..512"):
        encode_frames_message(0, np.zeros((513, 1, 1, 1), np.int16), np.zeros(513), np.zeros(513))
    with pytest.raises(ProtocolError, match="dtype must be one of"):
        encode_frames_message(0, _frames(1, "int64"), [1.0], [False])


FIELDS = {
    "/acquisition/drivefield/baseFrequency": 2.5e6,
    "/acquisition/drivefield/divider": [[102], [96]],
    "/acquisition/numAverages": 10,
    "/acquisition/numPeriodsPerFrame": 2,
    "/acquisition/receiver/numChannels": 2,
    "/acquisition/receiver/numSamplingPoints": 1632,
    "/acquisition/receiver/bandwidth": 1.25e6,
}


def test_frame_duration_uses_the_cycle_or_the_dividers():
    assert frame_duration_s(FIELDS) == pytest.approx(1632 / 2.5e6 * 10 * 2)  # lcm(102, 96) = 1632
    assert frame_duration_s({**FIELDS, "/acquisition/drivefield/cycle": 0.001}) == pytest.approx(0.02)


def test_check_header_accepts_a_header_and_names_what_is_wrong():
    header = {"protocol": "mpi-live/1", "dtype": "int16", "started_at": 1.7e9, "source": {}, "fields": FIELDS}
    check_header(header)
    with pytest.raises(ProtocolError, match="outside"):
        check_header({**header, "fields": {**FIELDS, "/measurement/data": 1}})
    with pytest.raises(ProtocolError, match="required fields missing: /acquisition/receiver/bandwidth"):
        check_header({**header, "fields": {k: v for k, v in FIELDS.items() if "bandwidth" not in k}})
    with pytest.raises(ProtocolError, match="more than 4096 values"):
        check_header({**header, "fields": {**FIELDS, "/acquisition/gradient": [0.0] * 4097}})
