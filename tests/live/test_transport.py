"""The live transports: frames in order, pending blocks back to a replaced reader, events after an id.

Every behaviour is checked on both transports: the in-process one of the embedded default
and Redis Streams (the real Redis of CI; skipped locally without one).
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from live.transport import MemoryTransport, RedisTransport, get_transport, reset_transport
from tests.services import redis_url


def _frames(n: int, start: int = 0) -> np.ndarray:
    return (np.arange(n * 2 * 3 * 8, dtype=np.int16).reshape(n, 2, 3, 8) + start).astype(np.int16)


@pytest.fixture(params=["memory", "redis"])
def transport(request):
    if request.param == "memory":
        yield MemoryTransport()
        return
    url = redis_url()
    yield RedisTransport(url)


@pytest.fixture
def session_id():
    # Redis keys outlive a test: a fresh id per test so no stream is shared.
    return uuid.uuid4().int % 10**12


def _publish(transport, session_id, first, n, *, background=None):
    bg = np.zeros(n, dtype=bool) if background is None else np.asarray(background)
    times = 1.7e9 + np.arange(first, first + n) * 0.0215
    transport.publish_frames(session_id, first, _frames(n, first), bg, times)


def test_frames_arrive_in_order_with_their_bytes_flags_and_times(transport, session_id):
    _publish(transport, session_id, 0, 3, background=[True, False, False])
    _publish(transport, session_id, 3, 2)
    transport.publish_control(session_id, "end", {"scan": 7})

    blocks = transport.read_frames(session_id, block_ms=100)

    assert [b.kind for b in blocks] == ["frames", "frames", "end"]
    assert [b.first_frame for b in blocks[:2]] == [0, 3]
    np.testing.assert_array_equal(blocks[0].frames, _frames(3, 0))
    np.testing.assert_array_equal(blocks[1].frames, _frames(2, 3))
    assert blocks[0].frames.dtype == np.int16
    assert blocks[0].is_background.tolist() == [True, False, False]
    np.testing.assert_allclose(blocks[1].acquired_at, 1.7e9 + np.array([3, 4]) * 0.0215, rtol=0, atol=1e-6)
    assert blocks[2].info == {"scan": 7}
    assert blocks[2].frames is None and blocks[2].count == 0
    assert all(b.received_at > 1.7e9 for b in blocks)


def test_unacknowledged_blocks_come_back_before_new_ones(transport, session_id):
    _publish(transport, session_id, 0, 2)
    _publish(transport, session_id, 2, 2)
    first = transport.read_frames(session_id, block_ms=100, max_blocks=1)
    assert [b.first_frame for b in first] == [0]
    transport.ack_frames(session_id, [first[0].entry_id])

    second = transport.read_frames(session_id, block_ms=100, max_blocks=1)
    assert [b.first_frame for b in second] == [2]
    # The reader stops without acknowledging (a killed worker): its replacement reads it again.
    _publish(transport, session_id, 4, 2)
    again = transport.read_frames(session_id, block_ms=100)
    assert [b.first_frame for b in again] == [2]
    transport.ack_frames(session_id, [b.entry_id for b in again])
    rest = transport.read_frames(session_id, block_ms=100)
    assert [b.first_frame for b in rest] == [4]
    transport.ack_frames(session_id, [b.entry_id for b in rest])
    assert transport.read_frames(session_id, block_ms=50) == []


def test_a_blocked_reader_wakes_when_frames_are_published(transport, session_id):
    got = []
    reader = threading.Thread(target=lambda: got.extend(transport.read_frames(session_id, block_ms=5000)))
    reader.start()
    time.sleep(0.2)
    started = time.monotonic()
    _publish(transport, session_id, 0, 1)
    reader.join(timeout=5)
    assert [b.first_frame for b in got] == [0]
    assert time.monotonic() - started < 1.0


def test_events_resume_after_the_last_id_seen(transport, session_id):
    ids = [transport.publish_event(session_id, {"type": "metrics", "frame": n}) for n in range(5)]

    everything = transport.read_events(session_id, None, block_ms=100)
    assert [e["frame"] for _, e in everything] == [0, 1, 2, 3, 4]
    assert [i for i, _ in everything] == ids
    after = transport.read_events(session_id, ids[2], block_ms=100)
    assert [e["frame"] for _, e in after] == [3, 4]
    assert transport.read_events(session_id, ids[-1], block_ms=50) == []
    # A Last-Event-ID that this transport never issued starts from the beginning.
    assert len(transport.read_events(session_id, "not-an-id", block_ms=50)) == 5


def test_streams_of_sessions_are_apart(transport, session_id):
    other = session_id + 1
    _publish(transport, session_id, 0, 1)
    transport.publish_event(session_id, {"type": "health"})
    assert transport.read_frames(other, block_ms=50) == []
    assert transport.read_events(other, None, block_ms=50) == []


def test_forget_drops_the_frames_and_keeps_the_events(transport, session_id):
    _publish(transport, session_id, 0, 2)
    transport.publish_event(session_id, {"type": "ended", "scan": None})
    transport.forget(session_id)
    assert transport.read_frames(session_id, block_ms=50) == []
    assert [e["type"] for _, e in transport.read_events(session_id, None, block_ms=50)] == ["ended"]


def test_bad_blocks_are_refused(transport, session_id):
    with pytest.raises(ValueError, match="frames must be"):
        transport.publish_frames(session_id, 0, np.zeros((2, 3)), np.zeros(2, bool), np.zeros(2))
    with pytest.raises(ValueError, match="must be"):
        transport.publish_frames(session_id, 0, _frames(2), np.zeros(3, bool), np.zeros(2))
    with pytest.raises(ValueError, match="control kind"):
        transport.publish_control(session_id, "pause", {})
    assert transport.read_frames(session_id, block_ms=50) == []


def test_the_setting_chooses_the_transport(settings):
    settings.LIVE_TRANSPORT = "memory"
    reset_transport()
    assert isinstance(get_transport(), MemoryTransport)
    assert get_transport() is get_transport()
    settings.LIVE_TRANSPORT = "carrier-pigeon"
    reset_transport()
    with pytest.raises(ValueError, match="LIVE_TRANSPORT"):
        get_transport()
    reset_transport()
