"""One reader of a session's events per server process, shared by every viewer it serves.

Without it, each open event stream (``live.events.async_stream``) polled the transport on
its own, every 50 ms, through the thread pool, and serialized every event again: 20
viewers of one session were 400 transport reads and 20 JSON encodings of each event per
second, all in the process (embedded: the same process, and the same interpreter lock, as
the live worker) whose latency they watch. Measured with ``benchmarks/live.py --viewers``.

Here, the first viewer of a session in this process starts its :class:`SessionFeed`: one
daemon thread that waits on the transport (``read_events`` blocking up to
``READ_BLOCK_MS``: the in-memory transport's condition variable, or Redis' XREAD BLOCK),
encodes each event once as its Server-Sent Events text (``live.events.sse``), and hands the
batch to the event loop, which wakes the viewers waiting on it. A viewer then costs one
write per batch of events, whatever its number.

The feed keeps the last ``KEEP`` events it read (ids in the transport's order,
``Transport.event_key``), from the first the transport holds. A viewer whose last seen
event is older than what the feed keeps (a late reconnect with ``Last-Event-ID``) reads
the transport directly until it reaches what the feed keeps, as every viewer did before.
The thread ends ``LINGER_S`` after the last viewer of the session left, or once it has
read the ``ended`` event.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from live.transport import Transport

log = logging.getLogger(__name__)

#: How long the reader waits on the transport per read (also how soon it sees it is unwatched).
READ_BLOCK_MS = 1000
#: Events the feed keeps for viewers that connect or resume (about 40 s of metrics at 46 fps).
KEEP = 2000
#: How long a feed outlives its last viewer (a page reloaded, a dropped connection coming back).
LINGER_S = 10.0
#: After a failed transport read, the reader waits this long before the next.
RETRY_S = 1.0


class SessionFeed:
    """The events of one session read once in this process, encoded once, for every viewer."""

    def __init__(
        self, session_id: int, transport: Transport, loop: asyncio.AbstractEventLoop, encode: Callable[[str, dict], str]
    ) -> None:
        self.session_id = session_id
        self.transport = transport
        self.loop = loop
        self.encode = encode
        #: events after this key are all in ``keys`` / ``items`` (the transport's start at first)
        self.start_key = transport.event_key(None)
        self.keys: list[tuple[int, ...]] = []
        self.items: list[tuple[str, str, bool]] = []  # (event id, SSE text, is the ended event)
        self.changed = asyncio.Event()
        self.ended = False
        self.viewers = 0
        self.left_at = time.monotonic()
        self.stopped = False
        self.reads = 0  # transport reads (tests, benchmarks)
        self.thread = threading.Thread(target=self._run, name=f"live-feed-{session_id}", daemon=True)

    # -- the event loop's side --------------------------------------------------------------

    def since(self, key: tuple[int, ...]) -> list[tuple[tuple[int, ...], str, str, bool]] | None:
        """The kept events after ``key`` as (key, id, SSE text, ended); None when ``key`` is
        older than what the feed keeps (read the transport directly up to it)."""
        if key < self.start_key:
            return None
        at = bisect.bisect_right(self.keys, key)
        return [(self.keys[i], *self.items[i]) for i in range(at, len(self.keys))]

    async def wait(self, timeout: float) -> None:
        """Until the feed has new events, or ``timeout`` seconds."""
        changed = self.changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=max(timeout, 0.0))

    def _extend(self, batch: list[tuple[tuple[int, ...], str, str, bool]], start_key: tuple[int, ...] | None) -> None:
        if start_key is not None:
            # The read held more than the feed keeps (a session long under way, a reader that
            # fell behind): only its last KEEP events came, so the feed restarts after the gap.
            self.start_key = start_key
            self.keys.clear()
            self.items.clear()
        for key, event_id, text, ended in batch:
            if self.keys and key <= self.keys[-1]:
                continue  # never twice (a read that overlapped the one before)
            self.keys.append(key)
            self.items.append((event_id, text, ended))
            self.ended = self.ended or ended
        if len(self.keys) > 2 * KEEP:  # trim in halves: amortised, the kept range stays contiguous
            drop = len(self.keys) - KEEP
            self.start_key = self.keys[drop - 1]
            del self.keys[:drop]
            del self.items[:drop]
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    # -- the reader thread ------------------------------------------------------------------

    def _run(self) -> None:
        after: str | None = None
        try:
            while not self._should_stop():
                try:
                    events = self.transport.read_events(self.session_id, after, block_ms=READ_BLOCK_MS)
                except Exception:  # a transport outage: viewers wait, the reader tries again
                    log.exception("live feed of session %s: reading the transport failed", self.session_id)
                    time.sleep(RETRY_S)
                    continue
                self.reads += 1
                if not events:
                    continue
                after = events[-1][0]
                start_key = None
                if len(events) > KEEP:  # keep (and encode) the last KEEP events only
                    start_key = self.transport.event_key(events[-KEEP - 1][0])
                    events = events[-KEEP:]
                batch = [
                    (
                        self.transport.event_key(event_id),
                        event_id,
                        self.encode(event_id, event),
                        event.get("type") == "ended",
                    )
                    for event_id, event in events
                ]
                try:
                    self.loop.call_soon_threadsafe(self._extend, batch, start_key)
                except RuntimeError:  # the loop is closed: no viewer is left to serve
                    return
                if any(item[3] for item in batch):
                    return  # nothing follows the ended event
        finally:
            _retire(self)

    def _should_stop(self) -> bool:
        with _lock:
            if self.viewers == 0 and time.monotonic() - self.left_at >= LINGER_S:
                self.stopped = True
            if self.stopped and _feeds.get(_key(self.session_id, self.transport)) is self:
                del _feeds[_key(self.session_id, self.transport)]
            return self.stopped


_lock = threading.Lock()
_feeds: dict[tuple[int, int], SessionFeed] = {}


def _key(session_id: int, transport: Transport) -> tuple[int, int]:
    return (int(session_id), id(transport))


def _retire(feed: SessionFeed) -> None:
    """The reader stopped: the feed keeps serving what it read, but a new viewer gets a new feed."""
    with _lock:
        feed.stopped = True
        if _feeds.get(_key(feed.session_id, feed.transport)) is feed:
            del _feeds[_key(feed.session_id, feed.transport)]


def join(session_id: int, transport: Transport, encode: Callable[[str, dict], str]) -> SessionFeed:
    """The session's feed in this process and event loop (started if none runs), counting one more viewer."""
    loop = asyncio.get_running_loop()
    with _lock:
        key = _key(session_id, transport)
        feed = _feeds.get(key)
        # A feed of another event loop (tests run one per test) or another transport object
        # that happens to have the same id is not this one: it ends once its viewers are gone.
        if feed is None or feed.stopped or feed.loop is not loop or feed.transport is not transport:
            feed = _feeds[key] = SessionFeed(session_id, transport, loop, encode)
            feed.thread.start()
        feed.viewers += 1
        return feed


def leave(feed: SessionFeed) -> None:
    with _lock:
        feed.viewers -= 1
        if feed.viewers == 0:
            feed.left_at = time.monotonic()


def running_feeds() -> list[SessionFeed]:
    with _lock:
        return list(_feeds.values())
