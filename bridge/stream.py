"""Pacing, batching and resume: the frames of a source sent to a live session in order.

``replay`` paces a finished measurement at the acquisition rate x speed: frame n is complete
at ``started_at + (n + 1) * frame_duration / speed`` and is stamped with that wall-clock
time. ``follow`` sends the frames a scanner appends to a growing file, stamped when the
bridge sees them. Both send frames in order, at most :data:`MAX_FRAMES_PER_MESSAGE` (and
``max_message_bytes``) per message, resume from the session's ``next_frame`` after a failed
message (so nothing is skipped and nothing is sent twice once the server has it), and end the
session with the number of frames sent.

With ``StreamOptions.spectra`` the bridge sends selected spectra instead of samples (header
``payload`` "spectra"): it reads the frequencies from the session
(``GET /api/v1/live-sessions/{id}/`` ``frequency_selection``, which the scanner token may
read) and sends the rfft of each frame's periods at those bins (:func:`select_spectra`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from bridge.client import BridgeError, LiveClient, Resync, ServerRefused, Transient
from bridge.mdf_source import MDFSource, MDFSourceError
from bridge.protocol import (
    MAX_FRAMES_PER_MESSAGE,
    PROTOCOL,
    SPECTRA_DTYPE,
    check_frequency_selection,
    encode_frames_message,
    select_spectra,
)

#: Default cap of one message's frame bytes (the server allows 64 MiB): large enough for
#: 512 frames of a 2D scanner, small enough that a resend after a drop is cheap.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Resynchronisations in a row that move nothing forward before the bridge stops.
MAX_IDLE_RESYNCS = 20
#: The injection marks ``replay --mark`` enters (the platform's ``LiveMark`` kinds).
MARK_KINDS = ("injection_start", "injection_pause", "injection_resume", "injection_stop")


@dataclass(frozen=True)
class Mark:
    """An injection mark to enter when the stream reaches ``frame`` (the frames before it recorded)."""

    frame: int
    kind: str
    note: str = ""


@dataclass
class StreamOptions:
    speed: float = 1.0
    batch_ms: float = 50.0
    max_frames: int | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    idle_end_s: float = 10.0
    poll_s: float = 0.05
    #: a JSON file keeping the stream header, so that a bridge started again continues the session
    state_path: str | None = None
    #: injection marks entered while replaying (``replay --mark``), by frame
    marks: tuple[Mark, ...] = ()
    #: send the session's selected spectra (complex64) instead of the samples
    spectra: bool = False


@dataclass
class StreamStats:
    messages: int = 0
    resyncs: int = 0
    frames_posted: int = 0
    latencies_s: list[float] = field(default_factory=list)


class Streamer:
    """Streams one source into one session through ``client``."""

    def __init__(
        self,
        client: LiveClient,
        session_id: str,
        source: MDFSource,
        options: StreamOptions,
        *,
        kind: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        log: TextIO | None = None,
        mark_client: LiveClient | None = None,
    ) -> None:
        self.client = client
        #: a person's client for the injection marks (the scanner's token may not mark)
        self.mark_client = mark_client
        self.marks_entered: list[dict[str, Any]] = []
        self._marks = sorted(options.marks, key=lambda m: m.frame)
        self.session_id = str(session_id)
        self.source = source
        self.options = options
        self.kind = kind
        self.clock = clock
        self.sleep = sleep
        self.log = log if log is not None else sys.stderr
        self.stats = StreamStats()
        self.next_frame = 0
        self.started_at = 0.0
        self.run_started = 0.0
        self.resumed_from = 0
        #: the 1-based rfft bins sent (spectra), from the session at start
        self.frequency_selection: list[int] | None = None
        self._size_messages(source.frame_shape[2], np.dtype(source.dtype).itemsize)
        self._acquired = np.zeros(0, dtype=np.float64)  # acquired_at of every frame stamped so far
        self._idle_resyncs = 0

    def _size_messages(self, values_per_period: int, itemsize: int) -> None:
        j, c, _ = self.source.frame_shape
        self.frame_bytes = int(j * c * values_per_period * itemsize)
        self.max_count = max(1, min(MAX_FRAMES_PER_MESSAGE, self.options.max_message_bytes // self.frame_bytes))

    @property
    def payload(self) -> str:
        return "spectra" if self.options.spectra else "samples"

    # -- header and start ---------------------------------------------------------------

    def header(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "protocol": PROTOCOL,
            "dtype": SPECTRA_DTYPE if self.options.spectra else self.source.dtype,
            "started_at": self.started_at,
            "source": self.source.source_info(self.kind),
            "fields": self.source.fields,
        }
        if self.options.spectra:
            header["payload"] = "spectra"
            header["frequency_selection"] = self.frequency_selection
        return header

    def _use_selection(self, selection: Any, where: str) -> None:
        try:
            self.frequency_selection = check_frequency_selection(selection, self.source.frame_shape[2])
        except ValueError as exc:
            raise BridgeError(f"{where}: the frequency selection is unusable: {exc}") from None
        self._size_messages(len(self.frequency_selection), np.dtype(SPECTRA_DTYPE).itemsize)

    def _session_selection(self) -> None:
        """The frequencies to send, from the session (spectra)."""
        session = self.client.get_session(self.session_id)
        selection = session.get("frequency_selection") if isinstance(session, dict) else None
        if selection is None:
            raise BridgeError(
                f"session {self.session_id} has no frequency_selection (no system matrix yet): open the session "
                "with its system matrix to stream spectra, or stream samples (without --spectra)"
            )
        self._use_selection(selection, f"session {self.session_id}")

    def start(self) -> dict[str, Any]:
        """POST start. With a state file from an earlier run for this session, its header
        (``started_at`` included) is sent again, so the server (idempotent start) lets the
        stream continue from its next_frame; the state file is written after a new start."""
        self.run_started = self.clock()
        header = self._saved_header()
        if header is None:
            self.started_at = self.run_started
            if self.options.spectra:
                self._session_selection()
            header = self.header()
        else:
            self.started_at = float(header["started_at"])
        answer = self.client.start(self.session_id, header)
        self.next_frame = _next_frame(answer, "start")
        self.resumed_from = self.next_frame
        if self.options.state_path:
            _write_json(self.options.state_path, {"session": self.session_id, "header": header})
        return answer

    def _saved_header(self) -> dict[str, Any] | None:
        path = self.options.state_path
        if not path or not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
            header = state["header"]
            saved_session = str(state["session"])
            float(header["started_at"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BridgeError(f"{path}: not a bridge state file ({' '.join(str(exc).split())})") from None
        if saved_session != self.session_id:
            return None  # another session's state: this session starts afresh (and overwrites it)
        mine = self.header()
        for key in ("protocol", "dtype", "fields", "payload"):
            if header.get(key) != mine.get(key):
                raise BridgeError(
                    f"{path}: the saved stream header of session {saved_session} differs from this measurement's "
                    f"({key}): not the same stream"
                )
        if self.options.spectra:  # the frequencies the session was started with
            self._use_selection(header.get("frequency_selection"), path)
        print(f"bridge: continuing session {saved_session} with its saved header", file=self.log, flush=True)
        return header

    # -- stamping -----------------------------------------------------------------------

    def _stamp(self, upto: int, times: Callable[[int, int], np.ndarray]) -> None:
        """Give frames [len(stamped), upto) their acquired_at (kept for resends)."""
        have = self._acquired.shape[0]
        if upto > have:
            new = times(have, upto)
            if have:
                new = np.maximum(new, self._acquired[-1])  # never decreasing, even if the clock steps back
            self._acquired = np.concatenate([self._acquired, new])

    def _stamp_now(self, upto: int, now: float) -> None:
        self._stamp(upto, lambda a, b: np.full(b - a, now))

    # -- sending ------------------------------------------------------------------------

    def send(self, start: int, stop: int) -> None:
        """Send frames [start, stop) (already stamped); afterwards next_frame is the server's."""
        frames, background = self.source.read(start, stop)
        if self.frequency_selection is not None:
            frames, dtype = select_spectra(frames, self.frequency_selection), SPECTRA_DTYPE
        else:
            dtype = self.source.dtype
        message = encode_frames_message(start, frames, self._acquired[start:stop], background, dtype=dtype)
        self.stats.messages += 1
        before = self.next_frame
        try:
            answer = self.client.send_frames(self.session_id, message)
        except Transient as failure:
            self.client.backoff.wait(f"POST frames {start}..{stop - 1}", failure)
            session = self.client.get_session(self.session_id, reset=False)
            status = session.get("status") if isinstance(session, dict) else None
            if status in ("ended", "aborted"):
                reason = session.get("status_reason") or ""
                raise BridgeError(f"the session is {status}{': ' + str(reason) if reason else ''}; stopping") from None
            self._resynced(_next_frame(session, "the session"), f"resumed after: {failure.reason}", counted=False)
            return
        except Resync as resync:
            self._resynced(resync.next_frame, f"{resync.code}: {resync.message}", counted=True)
            return
        self.client.backoff.reset()
        now = self.clock()
        acked = _next_frame(answer, "frames")
        if acked > before:
            self.stats.frames_posted += acked - before
            self.stats.latencies_s.extend((now - self._acquired[before:acked]).tolist())
        self.next_frame = acked
        self._idle_resyncs = 0

    def _resynced(self, next_frame: int, why: str, *, counted: bool) -> None:
        """Continue from the server's next_frame. ``counted``: a 409 answer (a server that keeps
        answering frame_gap without taking frames would loop forever; a transient failure is
        bounded by the backoff's retry_for instead)."""
        self.stats.resyncs += 1
        if next_frame > self._acquired.shape[0]:
            raise BridgeError(
                f"the server expects frame {next_frame} but only {self._acquired.shape[0]} frames have been sent"
            )
        if counted:
            self._idle_resyncs = 0 if next_frame > self.next_frame else self._idle_resyncs + 1
        if self._idle_resyncs > MAX_IDLE_RESYNCS:
            raise BridgeError(f"{MAX_IDLE_RESYNCS} resynchronisations in a row made no progress (last: {why})")
        print(f"bridge: continuing from frame {next_frame} ({why})", file=self.log, flush=True)
        self.next_frame = next_frame

    def end(self, total: int) -> dict[str, Any]:
        """POST end; a frames_missing answer sends the missing frames first (then ends again)."""
        while True:
            try:
                return self.client.end(self.session_id, total)
            except Resync as resync:
                self._resynced(resync.next_frame, f"{resync.code}: {resync.message}", counted=True)
            while self.next_frame < total:
                self.send(self.next_frame, min(total, self.next_frame + self.max_count))

    # -- replay -------------------------------------------------------------------------

    def replay(self) -> dict[str, Any]:
        """Stream the whole (finished) file at the acquisition rate x speed; end the session."""
        total = self.source.available()
        if self.options.max_frames is not None:
            total = min(total, self.options.max_frames)
        if total < 1:
            raise MDFSourceError(f"{self.source.path}: the measurement has no frames")
        self.start()
        speed = self.options.speed
        window = max(self.options.batch_ms, 0.0) / 1000.0
        paced = speed > 0
        if paced:
            # seconds after the stream start at which each frame is complete
            offsets = self.source.completion_offsets_s(total) / speed
            self._stamp(total, lambda a, b: self.started_at + offsets[a:b])

        def complete_at(n: int) -> float:  # wall clock when frame n is complete
            return self.started_at + float(offsets[n])

        def complete_by(t: float) -> int:  # frames complete at wall-clock time t
            return int(np.searchsorted(offsets, t - self.started_at + 1e-9, side="right"))

        while self.next_frame < total:
            self._enter_due_marks()
            first = self.next_frame
            limit = min(total, first + self.max_count)
            if self._marks:  # a message stops before a mark's frame, so the mark lands on it
                limit = min(limit, max(self._marks[0].frame, first + 1))
            if not paced:
                now = self.clock()
                self._stamp_now(limit, now)
                self.send(first, limit)
                continue
            now = self.clock()
            ready = complete_by(now)
            if ready <= first:
                self.sleep(max(0.0, complete_at(first) - now))
                continue
            # Wait (at most batch_ms after the oldest frame) for more frames of this message,
            # unless a full message is ready or no further frame completes within the window.
            wanted = min(limit, complete_by(complete_at(first) + window))
            if ready < wanted:
                self.sleep(max(0.0, complete_at(wanted - 1) - now))
                ready = min(limit, complete_by(self.clock()))
            self.send(first, min(ready, limit))
        self._enter_due_marks(every=True)
        return self._finish(total)

    def _enter_due_marks(self, *, every: bool = False) -> None:
        """Enter the marks whose frame the stream has reached (``every``: the rest, at its end).
        A refused mark (the session's order rules: a start already marked when a bridge runs
        again) is reported and skipped: the stream goes on."""
        while self._marks and (every or self._marks[0].frame <= self.next_frame):
            mark = self._marks.pop(0)
            if self.mark_client is None:
                raise BridgeError("injection marks need a person's token (--marks-token)")
            try:
                answer = self.mark_client.mark(self.session_id, mark.kind, mark.note)
            except ServerRefused as refused:
                print(
                    f"bridge: mark {mark.kind} at frame {mark.frame} not entered: {refused}", file=self.log, flush=True
                )
                continue
            entered = {"kind": mark.kind, "frame": answer.get("frame") if isinstance(answer, dict) else None}
            self.marks_entered.append(entered)
            print(f"bridge: marked {mark.kind} at frame {entered['frame']}", file=self.log, flush=True)

    # -- follow -------------------------------------------------------------------------

    def follow(self) -> dict[str, Any]:
        """Stream the frames a writer appends; end after idle_end_s without growth or at numFrames."""
        self.start()
        last_growth = self.clock()
        seen = 0
        while True:
            try:
                self.source.refresh()
                available = self.source.available()
                declared = self._declared_frames()
            except MDFSourceError as exc:
                # a writer without SWMR can leave the file unreadable for a moment
                if self.clock() - last_growth > self.options.idle_end_s:
                    raise
                print(f"bridge: waiting for a readable file: {exc}", file=self.log, flush=True)
                self.sleep(self.options.poll_s)
                continue
            if self.options.max_frames is not None:
                available = min(available, self.options.max_frames)
            now = self.clock()
            if available > seen:
                self._stamp_now(available, now)
                seen = available
                last_growth = now
            while self.next_frame < seen:
                self.send(self.next_frame, min(seen, self.next_frame + self.max_count))
            if declared and seen >= declared:
                break
            if self.options.max_frames is not None and seen >= self.options.max_frames:
                break
            if self.clock() - last_growth >= self.options.idle_end_s:
                break
            self.sleep(self.options.poll_s)
        return self._finish(seen)

    def _declared_frames(self) -> int:
        ds = self.source.h5.get("/acquisition/numFrames")
        try:
            value = int(np.asarray(ds[()]).ravel()[0]) if ds is not None and ds.size else 0
        except (TypeError, ValueError, OSError):
            return 0
        return max(value, 0)

    # -- the end ------------------------------------------------------------------------

    def _finish(self, total: int) -> dict[str, Any]:
        answer = self.end(total)
        duration = max(self.clock() - self.run_started, 1e-9)
        lat = np.asarray(self.stats.latencies_s) * 1000.0
        return {
            "frames_sent": total,
            "session": answer.get("id", self.session_id) if isinstance(answer, dict) else self.session_id,
            "scan": answer.get("scan") if isinstance(answer, dict) else None,
            "status": answer.get("status") if isinstance(answer, dict) else None,
            "retries": self.client.backoff.retries,
            "resyncs": self.stats.resyncs,
            "messages": self.stats.messages,
            "payload": self.payload,
            "bytes_sent": self.client.bytes_sent,
            "duration_s": round(duration, 3),
            "mean_rate_fps": round((total - self.resumed_from) / duration, 3),
            "resumed_from": self.resumed_from,
            "frame_duration_s": self.source.frame_duration_s,
            "speed": self.options.speed if self.kind == "replay" else None,
            "dtype": SPECTRA_DTYPE if self.frequency_selection is not None else self.source.dtype,
            "frame_shape": list(self.source.frame_shape),
            "frame_bytes": self.frame_bytes,
            "frequencies": None if self.frequency_selection is None else len(self.frequency_selection),
            "ack_latency_ms": (
                {
                    "p50": round(float(np.percentile(lat, 50)), 1),
                    "p95": round(float(np.percentile(lat, 95)), 1),
                    "max": round(float(lat.max()), 1),
                }
                if lat.size
                else None
            ),
            "fields_skipped": sorted(self.source.skipped_fields),
            "marks": self.marks_entered,
        }


def _next_frame(answer: Any, what: str) -> int:
    value = answer.get("next_frame") if isinstance(answer, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BridgeError(f"the server's answer to {what} has no valid next_frame: {answer!r}"[:300])
    return value


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
