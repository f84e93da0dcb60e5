"""A live worker killed mid-stream: the next worker claims the session once the lease has
run out, resumes from the checkpoint with the transport's unacknowledged frames, and every
foreground frame's metrics event is published exactly once. Withdrawal: `ended` aborted."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.utils import timezone

from live import runner
from live.models import LiveMetric, LiveSession
from live.worker import FINISHED, LiveWorker
from tests.live.conftest import events_of, publish

BLOCKS, BLOCK = 10, 10


class Killed(Exception):
    pass


def feed(live, transport, *, end: bool = True):
    t0 = time.time()
    rows = np.tile([80_000.0, 0.0, 1_000.0], (BLOCKS * BLOCK, 1))
    background = np.zeros(BLOCKS * BLOCK, dtype=bool)
    background[[0, 1, 2, 55, 56]] = True  # background frames at the start and mid-stream
    for k in range(BLOCKS):
        sl = slice(k * BLOCK, (k + 1) * BLOCK)
        publish(transport, live.session, k * BLOCK, rows[sl], background=background[sl], t0=t0)
    if end:
        transport.publish_control(live.session.pk, "end", {"scan": None})
    return np.flatnonzero(~background).tolist()


def expire_lease(session):
    LiveSession.objects.filter(pk=session.pk).update(lease_until=timezone.now() - dt.timedelta(seconds=1))


@pytest.mark.parametrize("dies", ["after publishing, before the checkpoint", "after the checkpoint, before the ack"])
def test_a_new_worker_resumes_from_the_checkpoint(live, transport, engines, dies):
    foreground = feed(live, transport)
    assert runner.claim_session("A", session_id=live.session.pk) == live.session.pk
    first = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="A")
    assert first.run(max_blocks=4) is None
    if dies.startswith("after publishing"):
        first._checkpoint = lambda *a, **k: (_ for _ in ()).throw(Killed())
    else:
        transport_ack = transport.ack_frames

        def ack_then_die(session_id, ids):
            raise Killed()

        transport.ack_frames = ack_then_die
    with pytest.raises(Killed):
        first.run(max_blocks=1)  # the fifth block: its metrics are out, then the worker dies
    if not dies.startswith("after publishing"):
        transport.ack_frames = transport_ack
    checkpoint = LiveSession.objects.get(pk=live.session.pk)
    assert checkpoint.frames_processed == (40 if dies.startswith("after publishing") else 50)

    # the dead worker's lease still holds: nobody else may take the session
    assert runner.claim_session("B", session_id=live.session.pk) is None
    expire_lease(live.session)
    assert runner.claim_session("B", session_id=live.session.pk) == live.session.pk
    second = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="B")
    assert second.run() == "ended"

    assert engines.built[-1].restored["frames_seen"] == checkpoint.frames_processed
    published = [e["frame"] for e in events_of(transport, live.session, "metrics")]
    assert published == foreground  # each foreground frame once, in order: none twice, none skipped
    assert list(LiveMetric.objects.filter(session=live.session).order_by("frame").values_list("frame", flat=True)) == (
        foreground
    )
    assert [e["type"] for e in events_of(transport, live.session)].count("ended") == 1
    session = LiveSession.objects.get(pk=live.session.pk)
    assert session.frames_processed == BLOCKS * BLOCK
    assert session.worker_id == FINISHED and session.lease_until is None
    assert runner.claim_session("C") is None  # a finished stream is never claimed again


def test_a_worker_whose_lease_was_taken_over_stops_without_acknowledging(live, transport, engines):
    feed(live, transport, end=False)
    runner.claim_session("A", session_id=live.session.pk)
    first = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="A")
    first.run(max_blocks=2)
    expire_lease(live.session)  # A stalled past its lease ...
    assert runner.claim_session("B", session_id=live.session.pk) == live.session.pk  # ... and B took over
    assert first.run() is None
    assert first.lease_lost
    assert LiveSession.objects.get(pk=live.session.pk).frames_processed == 20  # A's third block not recorded
    pending = transport.read_frames(live.session.pk, block_ms=0)
    assert pending[0].first_frame == 20  # still there for B


def test_a_dead_worker_that_had_published_ended_is_finished_by_the_next(live, transport, engines):
    feed(live, transport)
    runner.claim_session("A", session_id=live.session.pk)
    first = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="A")
    first._record_finish = lambda *a, **k: (_ for _ in ()).throw(Killed())
    with pytest.raises(Killed):
        first.run()
    expire_lease(live.session)
    runner.claim_session("B", session_id=live.session.pk)
    assert LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="B").run() == "ended"
    assert [e["type"] for e in events_of(transport, live.session)].count("ended") == 1
    assert LiveSession.objects.get(pk=live.session.pk).worker_id == FINISHED


def test_withdrawal_aborts_the_stream(live, transport, engines):
    """Consent withdrawn mid-stream: the ingest path aborts the session and publishes the
    abort after the frames it recorded; the worker processes those, then `ended` aborted."""
    t0 = time.time()
    publish(transport, live.session, 0, np.tile([80_000.0, 0.0, 0.0], (10, 1)), t0=t0)
    LiveSession.objects.filter(pk=live.session.pk).update(status="aborted", status_reason="consent withdrawn")
    transport.publish_control(live.session.pk, "abort", {"reason": "consent withdrawn"})
    assert LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run() == "aborted"
    events = events_of(transport, live.session)
    assert [e["frame"] for e in events if e["type"] == "metrics"] == list(range(10))
    assert events[-1] == {"type": "ended", "scan": None, "status": "aborted"}


def test_a_final_session_whose_control_block_was_lost_still_ends(live, transport, engines, monkeypatch):
    from live import worker as live_worker

    monkeypatch.setattr(live_worker, "FINAL_IDLE_S", 0.0)
    monkeypatch.setattr(live_worker, "HEALTH_INTERVAL_S", 0.0)
    publish(transport, live.session, 0, np.tile([80_000.0, 0.0, 0.0], (10, 1)), t0=time.time())
    # 12 frames recorded, 10 published: the last 2 were lost with the transport
    LiveSession.objects.filter(pk=live.session.pk).update(
        status="aborted", status_reason="consent withdrawn", frames_received=12, frames_recorded=12
    )
    worker = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, read_block_ms=10)
    assert worker.run() == "aborted"
    events = events_of(transport, live.session)
    assert events[-1] == {"type": "ended", "scan": None, "status": "aborted"}
    assert "frames 10-11 never reached the live monitor (they are in the recording)" in events[-2]["notes"]


def test_a_new_worker_resumes_over_redis_streams(live, engines):
    """The same over Redis Streams (production): the killed worker's unacknowledged block is
    the consumer group's pending entry, read first by the next worker."""
    from live.transport import RedisTransport
    from tests.services import redis_url

    transport = RedisTransport(redis_url())
    import redis

    client = redis.Redis.from_url(redis_url())
    client.delete(f"live:{live.session.pk}:frames", f"live:{live.session.pk}:events")  # ids restart per test DB
    try:
        foreground = feed(live, transport)
        runner.claim_session("A", session_id=live.session.pk)
        first = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="A")
        first.run(max_blocks=4)
        first._checkpoint = lambda *a, **k: (_ for _ in ()).throw(Killed())
        with pytest.raises(Killed):
            first.run(max_blocks=1)
        expire_lease(live.session)
        runner.claim_session("B", session_id=live.session.pk)
        second = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, worker_id="B")
        assert second.run() == "ended"
        assert [e["frame"] for e in events_of(transport, live.session, "metrics")] == foreground
        assert not client.exists(f"live:{live.session.pk}:frames")  # forgotten once finished
    finally:
        client.delete(f"live:{live.session.pk}:frames", f"live:{live.session.pk}:events")
