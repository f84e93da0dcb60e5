"""Many viewers of one session on the ASGI path: one transport reader and one encoding per
event for all of them (``live.fanout``), every event to every viewer once and in order, a
late resume older than the feed keeps served from the transport, the stream closed after
``ended`` (issue #16: 20 viewers without raising the live latency)."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from live import events as live_events
from live import fanout
from live.transport import MemoryTransport, RedisTransport
from tests.services import redis_url

SESSION = uuid.uuid4().int % 10**12  # Redis keys outlive a test run: a fresh session id
VIEWERS = 20


class Counting:
    """A transport whose event reads are counted."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads = 0

    def read_events(self, session_id, after_id, *, block_ms):
        self.reads += 1
        return self.inner.read_events(session_id, after_id, block_ms=block_ms)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(params=["memory", "redis"])
def any_transport(request):
    if request.param == "memory":
        return MemoryTransport()
    return RedisTransport(redis_url())


def data_of(chunks: list[str]) -> list[dict]:
    out = []
    for message in "".join(chunks).split("\n\n"):
        for line in message.split("\n"):
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def run_in_own_loop(coroutine):
    """``asyncio.run`` on a thread of its own: the suite's session-wide Playwright (tests/e2e)
    keeps an event loop running on the main thread, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def read_all(transport, after=None) -> list[str]:
    return [chunk async for chunk in live_events.async_stream(SESSION, after, transport=transport)]


@pytest.fixture
def counted_encodings(monkeypatch):
    calls = []

    def sse(event_id, event):
        calls.append(event_id)
        return original(event_id, event)

    original = live_events.sse
    monkeypatch.setattr(live_events, "sse", sse)
    monkeypatch.setattr(live_events, "FINISHED_CHECK_S", 60.0)  # no database check in these tests
    return calls


def test_twenty_viewers_share_one_reader_and_one_encoding_of_each_event(counted_encodings, any_transport):
    transport = Counting(any_transport)

    async def run():
        viewers = [asyncio.create_task(read_all(transport)) for _ in range(VIEWERS)]
        await asyncio.sleep(0.05)  # all connected, waiting
        for n in range(300):
            transport.publish_event(SESSION, {"type": "metrics", "frame": n})
            if n % 10 == 9:
                await asyncio.sleep(0.002)  # blocks of frames, as the worker publishes them
        transport.publish_event(SESSION, {"type": "ended", "scan": 5})
        return await asyncio.wait_for(asyncio.gather(*viewers), timeout=20)

    results = run_in_own_loop(run())
    for chunks in results:
        received = data_of(chunks)
        assert [e["frame"] for e in received[:-1]] == list(range(300))  # each once, in order
        assert received[-1] == {"type": "ended", "scan": 5}
    # One encoding per event for the 20 viewers (the 301 events), not one per viewer.
    assert len(counted_encodings) == 301
    # Reads: the one feed's, blocking on the transport (at most one per event published, plus
    # the timed-out waits), never one per viewer.
    assert transport.reads <= 301 + 5


def test_a_resume_older_than_the_feed_keeps_reads_the_transport_up_to_it(counted_encodings, monkeypatch):
    monkeypatch.setattr(fanout, "KEEP", 10)
    transport = MemoryTransport()
    for n in range(100):
        transport.publish_event(SESSION, {"type": "metrics", "frame": n})

    async def run():
        first = asyncio.create_task(read_all(transport))  # starts the feed: it keeps the last 10
        await asyncio.sleep(0.1)
        late = asyncio.create_task(read_all(transport, after="40"))  # frames 40.. (id 41 is frame 40)
        await asyncio.sleep(0.1)
        for n in range(100, 120):
            transport.publish_event(SESSION, {"type": "metrics", "frame": n})
        transport.publish_event(SESSION, {"type": "ended", "scan": None})
        return await asyncio.wait_for(asyncio.gather(first, late), timeout=20)

    first, late = run_in_own_loop(run())
    # A viewer without Last-Event-ID gets the whole kept stream (the page's curves from the start).
    assert [e["frame"] for e in data_of(first)[:-1]] == list(range(120))
    assert [e["frame"] for e in data_of(late)[:-1]] == list(range(40, 120))
    assert data_of(late)[-1]["type"] == "ended"


def test_a_viewer_waiting_on_an_idle_session_is_woken_by_the_next_event(counted_encodings, monkeypatch):
    monkeypatch.setattr(live_events, "PING_INTERVAL_S", 0.2)
    transport = MemoryTransport()

    async def run():
        viewer = asyncio.create_task(read_all(transport))
        await asyncio.sleep(0.5)  # idle: pings only
        loop = asyncio.get_running_loop()
        published = loop.time()
        transport.publish_event(SESSION, {"type": "ended", "scan": 1})
        chunks = await asyncio.wait_for(viewer, timeout=5)
        return chunks, loop.time() - published

    chunks, waited = run_in_own_loop(run())
    assert ": ping\n\n" in chunks
    assert data_of(chunks) == [{"type": "ended", "scan": 1}]
    assert waited < 0.5  # woken by the feed, not found by a poll seconds later
