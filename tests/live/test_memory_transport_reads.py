"""The in-memory transport's event reads cost the new events, not the kept stream (20
viewers polling a long session held its lock for milliseconds per poll), and still
return exactly the events after an id, also once old events were dropped."""

from __future__ import annotations

import time

from live import transport as transport_module
from live.transport import MemoryTransport


def test_reads_after_an_id_return_exactly_the_later_events_also_after_trimming(monkeypatch):
    monkeypatch.setattr(transport_module, "EVENTS_KEPT", 10)
    t = MemoryTransport()
    ids = [t.publish_event(1, {"n": n}) for n in range(25)]  # events 1-15 dropped: 16-25 kept
    assert [e["n"] for _, e in t.read_events(1, ids[20], block_ms=0)] == [21, 22, 23, 24]
    assert [i for i, _ in t.read_events(1, None, block_ms=0)] == ids[15:]
    assert [e["n"] for _, e in t.read_events(1, ids[2], block_ms=0)] == list(range(15, 25))  # older than kept
    assert t.read_events(1, ids[-1], block_ms=0) == []


def test_a_poll_for_a_few_new_events_does_not_scan_the_kept_stream():
    t = MemoryTransport()
    for n in range(50_000):
        t.publish_event(1, {"n": n})
    after = str(49_997)
    start = time.perf_counter()
    for _ in range(200):
        assert len(t.read_events(1, after, block_ms=0)) == 3
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 0.002  # a scan of 50,000 events takes several ms; 3 events, microseconds
