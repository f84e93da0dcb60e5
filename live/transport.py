"""How recorded frames reach the live worker, and its events reach the viewers.

Two streams per session, in one of two transports chosen by ``settings.LIVE_TRANSPORT``:

- ``frames``: the ingest path publishes each recorded block (and, last, an ``end`` or
  ``abort`` control block) in frame order; the session's one live worker reads it and
  acknowledges each block once its results are published and checkpointed. A replaced
  worker reads the blocks still unacknowledged first, so nothing is skipped.
- ``events``: the worker publishes the events a viewer receives (``metrics``, ``alert``,
  ``image``, ``health``, ``ended``); each has an id, and a viewer that reconnects asks for
  the events after the last id it saw (Server-Sent Events' ``Last-Event-ID``).

``memory`` (the embedded default: one process, the worker is a thread of the web server)
keeps both streams in this process. ``redis`` (production: web servers and live workers are
separate processes, maybe separate hosts) uses Redis Streams: a consumer group on the frame
stream (XREADGROUP, XACK; a replacement worker's first read returns the pending entries) and
a capped event stream (XADD MAXLEN ~) read with XREAD BLOCK. Redis Streams are the transport
Redis documents for exactly this (an append-only log with consumer groups and
acknowledgements), and Redis is already the platform's broker: no new service.

The frames are not the record: the recording file is (``live.services.sessions``). The
transport may lose a block only where the recording keeps it, and the offline
reconstruction of the recording is the authoritative result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from django.conf import settings

#: Events kept per session for viewers that reconnect (about 20 minutes of metrics at 46 fps).
EVENTS_KEPT = 60_000
#: Frame blocks kept per session in Redis before the oldest are trimmed: far beyond any
#: backlog a live worker may have (a worker that far behind is already dropping display).
FRAME_BLOCKS_KEPT = 20_000
#: How long a session's streams are kept in Redis after the last write.
STREAM_TTL_S = 7 * 24 * 3600

CONTROL_KINDS = ("end", "abort")


@dataclass(frozen=True)
class FrameBlock:
    """One published block: recorded frames, or a control message after the last of them."""

    entry_id: str
    kind: str  # "frames" | "end" | "abort"
    first_frame: int
    frames: np.ndarray | None  # (n, J, C, V) as recorded
    is_background: np.ndarray | None  # (n,) bool
    acquired_at: np.ndarray | None  # (n,) unix seconds
    received_at: float  # the server's wall clock when the block was recorded
    info: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return 0 if self.frames is None else int(self.frames.shape[0])


class Transport(Protocol):
    """What both transports do (MemoryTransport, RedisTransport); the worker, the ingest
    path and the event stream see only this."""

    def publish_frames(
        self,
        session_id: int,
        first_frame: int,
        frames: np.ndarray,
        is_background: np.ndarray,
        acquired_at: np.ndarray,
    ) -> None: ...

    def publish_control(self, session_id: int, kind: str, info: dict) -> None: ...

    def read_frames(self, session_id: int, *, block_ms: int, max_blocks: int = 64) -> list[FrameBlock]: ...

    def ack_frames(self, session_id: int, entry_ids: Iterable[str]) -> None: ...

    def publish_event(self, session_id: int, event: dict) -> str: ...

    def read_events(self, session_id: int, after_id: str | None, *, block_ms: int) -> list[tuple[str, dict]]: ...

    def event_key(self, event_id: str | None) -> tuple[int, ...]:
        """The order of an event id as ``read_events`` reads it: the events after ``event_id`` are
        those with a greater key (an id the transport does not know as an id: from the start)."""
        ...

    def forget(self, session_id: int) -> None: ...

    def put_volume(self, session_id: int, frame: int | None, volume: np.ndarray) -> None:
        """Keep the latest image volume (float32, (nx, ny, nz)), replacing the one before."""
        ...

    def latest_volume(self, session_id: int) -> tuple[int | None, np.ndarray] | None:
        """(frame, volume) of the latest ``put_volume``, or None."""
        ...


def _check_block(frames: np.ndarray, is_background: np.ndarray, acquired_at: np.ndarray) -> int:
    n = int(frames.shape[0])
    if frames.ndim != 4 or n < 1:
        raise ValueError(f"frames must be (n >= 1, J, C, V), got shape {frames.shape}")
    if np.shape(is_background) != (n,) or np.shape(acquired_at) != (n,):
        raise ValueError(
            f"is_background {np.shape(is_background)} and acquired_at {np.shape(acquired_at)} must be ({n},)"
        )
    return n


def _check_control(kind: str) -> None:
    if kind not in CONTROL_KINDS:
        raise ValueError(f"control kind must be one of {CONTROL_KINDS}, got {kind!r}")


# ---------------------------------------------------------------------------
# In-process (embedded default)
# ---------------------------------------------------------------------------


class _MemorySession:
    def __init__(self) -> None:
        self.blocks: list[FrameBlock] = []  # unacknowledged, in order
        self.next_block = 0
        self.delivered: set[str] = set()
        self.events: list[tuple[int, dict]] = []
        self.next_event = 1
        self.volume: tuple[int | None, np.ndarray] | None = None


class MemoryTransport:
    """Both streams in this process, guarded by one condition variable.

    ``read_frames`` returns every unacknowledged block (a worker that restarts in the
    same process reads them again, like Redis' pending entries); ``read_events`` returns
    the events after an id. Event ids are decimal integers from 1.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sessions: dict[int, _MemorySession] = {}

    def _session(self, session_id: int) -> _MemorySession:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _MemorySession()
        return state

    def _append(self, session_id: int, make: Any) -> None:
        with self._cond:
            state = self._session(session_id)
            state.blocks.append(make(str(state.next_block)))
            state.next_block += 1
            self._cond.notify_all()

    def publish_frames(self, session_id, first_frame, frames, is_background, acquired_at) -> None:
        _check_block(frames, is_background, acquired_at)
        frames = np.array(frames, copy=True)
        bg = np.asarray(is_background, dtype=bool).copy()
        times = np.asarray(acquired_at, dtype=np.float64).copy()
        now = time.time()
        self._append(session_id, lambda entry: FrameBlock(entry, "frames", int(first_frame), frames, bg, times, now))

    def publish_control(self, session_id, kind, info) -> None:
        _check_control(kind)
        now = time.time()
        self._append(session_id, lambda entry: FrameBlock(entry, kind, -1, None, None, None, now, dict(info)))

    def read_frames(self, session_id, *, block_ms, max_blocks=64) -> list[FrameBlock]:
        deadline = time.monotonic() + block_ms / 1000.0
        with self._cond:
            state = self._session(session_id)
            while True:
                if state.blocks:
                    # As Redis' consumer group: blocks read but never acknowledged (a worker that
                    # stopped) come back first, and alone; new blocks only when none is pending.
                    pending = [b for b in state.blocks if b.entry_id in state.delivered]
                    out = (pending or state.blocks)[:max_blocks]
                    state.delivered.update(b.entry_id for b in out)
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def ack_frames(self, session_id, entry_ids) -> None:
        done = set(entry_ids)
        with self._cond:
            state = self._session(session_id)
            state.blocks = [b for b in state.blocks if b.entry_id not in done]
            state.delivered -= done

    def publish_event(self, session_id, event) -> str:
        with self._cond:
            state = self._session(session_id)
            event_id = state.next_event
            state.next_event += 1
            state.events.append((event_id, dict(event)))
            if len(state.events) > EVENTS_KEPT:
                del state.events[: len(state.events) - EVENTS_KEPT]
            self._cond.notify_all()
            return str(event_id)

    def read_events(self, session_id, after_id, *, block_ms) -> list[tuple[str, dict]]:
        after = _memory_event_id(after_id)
        deadline = time.monotonic() + block_ms / 1000.0
        with self._cond:
            state = self._session(session_id)
            while True:
                if state.events and state.events[-1][0] > after:
                    # Ids are consecutive: the events after ``after`` start at a known index,
                    # so a viewer's poll costs its new events, not the whole kept stream.
                    start = max(0, after - state.events[0][0] + 1)
                    return [(str(i), e) for i, e in state.events[start:]]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def event_key(self, event_id) -> tuple[int, ...]:
        return (_memory_event_id(event_id),)

    def forget(self, session_id) -> None:
        with self._cond:
            state = self._sessions.get(session_id)
            if state is not None:
                state.blocks.clear()
                state.delivered.clear()

    def put_volume(self, session_id, frame, volume) -> None:
        arr = np.array(volume, dtype=np.float32, order="C")  # a copy: the caller's array may change
        with self._cond:
            self._session(session_id).volume = (None if frame is None else int(frame), arr)

    def latest_volume(self, session_id) -> tuple[int | None, np.ndarray] | None:
        with self._cond:
            state = self._sessions.get(session_id)
            return None if state is None else state.volume


def _memory_event_id(after_id: str | None) -> int:
    if after_id in (None, ""):
        return 0
    try:
        value = int(str(after_id))
    except ValueError:
        return 0  # an id from another transport or a hand-made header: from the start
    return max(value, 0)


# ---------------------------------------------------------------------------
# Redis Streams (production)
# ---------------------------------------------------------------------------

GROUP = "live"
CONSUMER = "worker"  # one worker per session at a time (the database lease): a fixed name


def _frames_key(session_id: int) -> str:
    return f"live:{int(session_id)}:frames"


def _events_key(session_id: int) -> str:
    return f"live:{int(session_id)}:events"


def _volume_key(session_id: int) -> str:
    return f"live:{int(session_id)}:volume"


class RedisTransport:
    """Redis Streams: ``live:<id>:frames`` (consumer group ``live``) and ``live:<id>:events``."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self._groups: set[int] = set()

    def _ensure_group(self, session_id: int) -> None:
        if session_id in self._groups:
            return
        import redis

        try:
            self._redis.xgroup_create(_frames_key(session_id), GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(session_id)

    def _add(self, key: str, fields: dict, maxlen: int) -> str:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
        pipe.expire(key, STREAM_TTL_S)
        entry_id, _ = pipe.execute()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def publish_frames(self, session_id, first_frame, frames, is_background, acquired_at) -> None:
        _check_block(frames, is_background, acquired_at)
        self._ensure_group(session_id)
        frames = np.ascontiguousarray(frames)
        fields = {
            "kind": "frames",
            "first_frame": int(first_frame),
            "shape": ",".join(str(v) for v in frames.shape),
            "dtype": frames.dtype.str,
            "data": frames.tobytes(),
            "background": np.asarray(is_background, dtype=np.uint8).tobytes(),
            "acquired_at": np.asarray(acquired_at, dtype="<f8").tobytes(),
            "received_at": repr(time.time()),
        }
        self._add(_frames_key(session_id), fields, FRAME_BLOCKS_KEPT)

    def publish_control(self, session_id, kind, info) -> None:
        import json

        _check_control(kind)
        self._ensure_group(session_id)
        fields = {"kind": kind, "info": json.dumps(info), "received_at": repr(time.time())}
        self._add(_frames_key(session_id), fields, FRAME_BLOCKS_KEPT)

    def read_frames(self, session_id, *, block_ms, max_blocks=64) -> list[FrameBlock]:
        self._ensure_group(session_id)
        key = _frames_key(session_id)
        # Pending first ("0"): what this consumer read but never acknowledged (a killed worker).
        entries = _entries(self._redis.xreadgroup(GROUP, CONSUMER, {key: "0"}, count=max_blocks))
        if not entries:
            block = max(1, int(block_ms))
            entries = _entries(self._redis.xreadgroup(GROUP, CONSUMER, {key: ">"}, count=max_blocks, block=block))
        # A pending entry trimmed away by MAXLEN comes back without fields: it is in the recording.
        return [_decode_block(entry_id, fields) for entry_id, fields in entries if fields]

    def ack_frames(self, session_id, entry_ids) -> None:
        ids = list(entry_ids)
        if ids:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xack(_frames_key(session_id), GROUP, *ids)
            pipe.xdel(_frames_key(session_id), *ids)  # acknowledged blocks are in the recording
            pipe.execute()

    def publish_event(self, session_id, event) -> str:
        import json

        return self._add(_events_key(session_id), {"event": json.dumps(event, allow_nan=False)}, EVENTS_KEPT)

    def read_events(self, session_id, after_id, *, block_ms) -> list[tuple[str, dict]]:
        import json

        start = after_id if after_id and _is_stream_id(after_id) else "0-0"
        reply = self._redis.xread({_events_key(session_id): start}, count=1000, block=max(1, int(block_ms)))
        out = []
        for entry_id, fields in _entries(reply):
            raw = fields.get(b"event")
            if raw is None:
                continue
            out.append((entry_id.decode(), json.loads(raw)))
        return out

    def event_key(self, event_id) -> tuple[int, ...]:
        if event_id and _is_stream_id(event_id):
            left, _, right = str(event_id).partition("-")
            return (int(left), int(right))
        return (0, 0)

    def forget(self, session_id) -> None:
        self._redis.delete(_frames_key(session_id))
        self._groups.discard(session_id)

    def put_volume(self, session_id, frame, volume) -> None:
        arr = np.ascontiguousarray(volume, dtype="<f4")
        pipe = self._redis.pipeline()
        pipe.hset(
            _volume_key(session_id),
            mapping={
                "frame": "" if frame is None else str(int(frame)),
                "shape": ",".join(str(int(v)) for v in arr.shape),
                "data": arr.tobytes(),
            },
        )
        pipe.expire(_volume_key(session_id), STREAM_TTL_S)
        pipe.execute()

    def latest_volume(self, session_id) -> tuple[int | None, np.ndarray] | None:
        fields: dict[bytes, bytes] = self._redis.hgetall(_volume_key(session_id))  # type: ignore[assignment]
        if not fields or b"data" not in fields:
            return None
        shape = tuple(int(v) for v in fields[b"shape"].decode().split(","))
        frame = fields.get(b"frame", b"").decode()
        return (int(frame) if frame else None), np.frombuffer(fields[b"data"], dtype="<f4").reshape(shape)


def _entries(reply: Any) -> list[tuple[bytes, dict]]:
    """The (id, fields) entries of a one-stream XREAD / XREADGROUP reply (RESP2 list form)."""
    return list(reply[0][1]) if reply else []


def _is_stream_id(value: str) -> bool:
    left, sep, right = str(value).partition("-")
    return bool(sep) and left.isdigit() and right.isdigit()


def _decode_block(entry_id: bytes | str, fields: dict) -> FrameBlock:
    import json

    entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    kind = fields[b"kind"].decode()
    received_at = float(fields[b"received_at"])
    if kind != "frames":
        return FrameBlock(entry, kind, -1, None, None, None, received_at, json.loads(fields[b"info"]))
    shape = tuple(int(v) for v in fields[b"shape"].decode().split(","))
    frames = np.frombuffer(fields[b"data"], dtype=np.dtype(fields[b"dtype"].decode())).reshape(shape)
    bg = np.frombuffer(fields[b"background"], dtype=np.uint8).astype(bool)
    times = np.frombuffer(fields[b"acquired_at"], dtype="<f8").astype(np.float64)
    return FrameBlock(entry, kind, int(fields[b"first_frame"]), frames, bg, times, received_at)


# ---------------------------------------------------------------------------
# The process's transport
# ---------------------------------------------------------------------------

_lock = threading.Lock()
_transport: Transport | None = None


def get_transport() -> Transport:
    """The transport ``settings.LIVE_TRANSPORT`` names, one per process."""
    global _transport
    with _lock:
        if _transport is None:
            kind = settings.LIVE_TRANSPORT
            if kind == "memory":
                _transport = MemoryTransport()
            elif kind == "redis":
                _transport = RedisTransport(settings.LIVE_REDIS_URL)
            else:  # settings refuse any other value; this guards a test that patches it
                raise ValueError(f"LIVE_TRANSPORT must be 'memory' or 'redis', got {kind!r}")
        return _transport


def reset_transport() -> None:
    """Forget the process's transport (tests; a changed setting)."""
    global _transport
    with _lock:
        _transport = None


reset_memory_transport = reset_transport
