"""A minimal "mpi-live/1" server for the bridge's tests (stdlib http.server in a thread).

It parses frames messages itself, from the design (one JSON line, b"\\n", little-endian C-order
samples), not with bridge.protocol, so a bridge that drifts from the wire format fails. It
records every frame by index (bytes, background flag, acquired_at, when it arrived) and every
message's (first_frame, count), and it can be told to misbehave on the n-th frames request:

    "drop_mid_body"      read half the body, close the connection (nothing recorded)
    "drop_after_record"  record the frames, close without answering (the answer is lost)
    "503" / "429"        answer that status (nothing recorded)
    ("gap", k)           forget frames from k on and answer 409 frame_gap with next_frame k
    ("refuse", status, code, message)   answer that error
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

TOKEN = "scanner-token-1"
PERSON_TOKEN = "person-token-1"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections the tests drop on purpose: no traceback on stderr


@dataclass
class FakeSession:
    id: str
    status: str = "open"
    header: Any = None  # the stream header once started
    frames: dict[int, bytes] = field(default_factory=dict)
    background: dict[int, bool] = field(default_factory=dict)
    acquired_at: dict[int, float] = field(default_factory=dict)
    received_at: dict[int, float] = field(default_factory=dict)
    record_writes: dict[int, int] = field(default_factory=dict)
    frames_received: int = 0
    scan: int | None = None
    marks: list[dict[str, Any]] = field(default_factory=list)  # (kind, frame, note) as the platform keeps them
    #: what GET answers as frequency_selection (1-based rfft bins; None: no system matrix)
    frequency_selection: list[int] | None = None

    @property
    def next_frame(self) -> int:
        return len(self.frames)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "frames_received": self.frames_received,
            "frames_recorded": self.next_frame,
            "next_frame": self.next_frame,
            "scan": self.scan,
            "frequency_selection": self.frequency_selection,
        }

    def frame_shape(self) -> tuple[int, int, int]:
        """(J, C, V) of the started stream, (J, C, K_sel) for spectra."""
        fields = self.header["fields"]
        last = (
            len(self.header["frequency_selection"])
            if self.header.get("payload") == "spectra"
            else int(fields["/acquisition/receiver/numSamplingPoints"])
        )
        return (int(fields["/acquisition/numPeriodsPerFrame"]), int(fields["/acquisition/receiver/numChannels"]), last)


class FakeLiveServer:
    def __init__(self, session_id: str = "41") -> None:
        self.sessions = {session_id: FakeSession(session_id)}
        self.faults: dict[int, Any] = {}
        self.messages: list[tuple[int, int]] = []  # (first_frame, count) of every complete frames body
        self.requests: list[tuple[str, str, int]] = []
        self.frames_requests = 0
        #: close a connection that stays idle this long, without saying so (a keep-alive timeout)
        self.keepalive_timeout_s: float | None = None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def setup(self) -> None:
                super().setup()
                # a socket timeout: http.server closes a connection whose next request does not come
                self.connection.settimeout(server.keepalive_timeout_s)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_POST(self) -> None:
                server.handle(self, "POST")

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def session(self, session_id: str = "41") -> FakeSession:
        return self.sessions[session_id]

    # -- HTTP ---------------------------------------------------------------------------

    def reply(self, h: BaseHTTPRequestHandler, status: int, body: dict, method: str, extra: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.requests.append((method, h.path, status))  # before the answer: a client may look right after it
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def error(self, h, status: int, code: str, message: str, method: str, **extra: Any) -> None:
        self.reply(h, status, {"error": {"code": code, "message": message, "fields": {}}, **extra}, method)

    def drop(self, h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        if h.path.endswith("/marks/") and method == "POST":
            return self.mark(h, length, method)
        if h.headers.get("Authorization") != f"Token {TOKEN}":
            h.rfile.read(length)
            return self.error(h, 401, "not_authenticated", "Invalid token.", method)
        parts = [p for p in h.path.split("/") if p]
        # api v1 live-sessions {id} [action]
        if parts[:3] != ["api", "v1", "live-sessions"] or len(parts) not in (4, 5) or parts[3] not in self.sessions:
            h.rfile.read(length)
            return self.error(h, 404, "not_found", "No such session.", method)
        session = self.sessions[parts[3]]
        action = parts[4] if len(parts) == 5 else ""
        if method == "GET" and not action:
            return self.reply(h, 200, session.as_json(), method)
        if method != "POST" or action not in ("start", "frames", "end", "abort"):
            h.rfile.read(length)
            return self.error(h, 405, "method_not_allowed", "Not allowed.", method)
        if action == "frames":
            return self.frames(h, session, length, method)
        body = json.loads(h.rfile.read(length) or b"{}")
        with self.lock:
            if action == "start":
                if session.header is not None and session.header != body:
                    return self.error(h, 409, "stream_header_changed", "Different header.", method)
                first = session.header is None
                session.header = body
                session.status = "streaming"
                return self.reply(h, 201 if first else 200, session.as_json(), method)
            if action == "end":
                if session.status == "ended":
                    return self.reply(h, 200, session.as_json(), method)
                if body.get("frames_sent") != session.next_frame:
                    return self.error(
                        h,
                        409,
                        "frames_missing",
                        f"recorded {session.next_frame}",
                        method,
                        next_frame=session.next_frame,
                    )
                session.status = "ended"
                session.scan = 77
                return self.reply(h, 200, session.as_json(), method)
            session.status = "aborted"
            return self.reply(h, 200, session.as_json(), method)

    def mark(self, h: BaseHTTPRequestHandler, length: int, method: str) -> None:
        """POST marks as the platform answers it: a person's token only (the scanner's: 403),
        the frame is the next frame of the stream, the order rules (a second start: 409)."""
        body = json.loads(h.rfile.read(length) or b"{}")
        auth = h.headers.get("Authorization")
        if auth == f"Token {TOKEN}":
            return self.error(h, 403, "permission_denied", "A scanner token may not do this.", method)
        if auth != f"Token {PERSON_TOKEN}":
            return self.error(h, 401, "not_authenticated", "Invalid token.", method)
        session = self.sessions[h.path.split("/")[4]]
        with self.lock:
            if body["kind"] == "injection_start" and any(m["kind"] == "injection_start" for m in session.marks):
                return self.error(h, 409, "injection_already_started", "The injection start is already marked.", method)
            mark = {"kind": body["kind"], "frame": session.next_frame, "note": body.get("note", "")}
            session.marks.append(mark)
        return self.reply(h, 201, {"id": len(session.marks), **mark}, method)

    def frames(self, h: BaseHTTPRequestHandler, session: FakeSession, length: int, method: str) -> None:
        with self.lock:
            index = self.frames_requests
            self.frames_requests += 1
            fault = self.faults.get(index)
        if fault == "drop_mid_body":
            h.rfile.read(length // 2)
            return self.drop(h)
        body = h.rfile.read(length)
        if fault in ("503", "429"):
            h.close_connection = False
            extra = {"Retry-After": "0"} if fault == "429" else None
            return self.reply(
                h, int(fault), {"error": {"code": "busy", "message": "try later", "fields": {}}}, method, extra
            )
        if isinstance(fault, tuple) and fault[0] == "refuse":
            return self.error(h, fault[1], fault[2], fault[3], method)
        if session.status != "streaming":
            return self.error(h, 409, "session_not_streaming", "Not streaming.", method)
        header_line, _, payload = body.partition(b"\n")
        head = json.loads(header_line)
        dtype = np.dtype(session.header["dtype"]).newbyteorder("<")
        shape = session.frame_shape()
        count = head["count"]
        frame_bytes = int(np.prod(shape)) * dtype.itemsize
        if len(payload) != count * frame_bytes or len(head["acquired_at"]) != count or len(head["background"]) != count:
            return self.error(h, 400, "bad_frame_length", "wrong length", method)
        now = time.time()
        with self.lock:
            self.messages.append((head["first_frame"], count))
            session.frames_received += count
            if isinstance(fault, tuple) and fault[0] == "gap":
                keep = fault[1]
                for store in (
                    session.frames,
                    session.background,
                    session.acquired_at,
                    session.received_at,
                    session.record_writes,
                ):
                    for k in [k for k in store if k >= keep]:
                        del store[k]
                return self.error(h, 409, "frame_gap", f"expected frame {keep}", method, next_frame=keep)
            first = head["first_frame"]
            if first > session.next_frame:
                return self.error(
                    h, 409, "frame_gap", f"expected frame {session.next_frame}", method, next_frame=session.next_frame
                )
            for i in range(count):
                n = first + i
                if n < session.next_frame:
                    continue  # already recorded: an idempotent resend
                session.frames[n] = payload[i * frame_bytes : (i + 1) * frame_bytes]
                session.background[n] = head["background"][i]
                session.acquired_at[n] = head["acquired_at"][i]
                session.received_at[n] = now
                session.record_writes[n] = session.record_writes.get(n, 0) + 1
            answer = {"next_frame": session.next_frame, "frames_recorded": session.next_frame}
        if fault == "drop_after_record":
            return self.drop(h)
        return self.reply(h, 200, answer, method)

    # -- what arrived -------------------------------------------------------------------

    def recorded(self, session_id: str = "41") -> np.ndarray:
        """The recorded frames as (N, J, C, V) of the stream dtype (N, J, C, K_sel spectra), in index order."""
        s = self.sessions[session_id]
        shape = s.frame_shape()
        dtype = np.dtype(s.header["dtype"]).newbyteorder("<")
        assert sorted(s.frames) == list(range(len(s.frames)))
        return np.stack([np.frombuffer(s.frames[n], dtype=dtype).reshape(shape) for n in range(len(s.frames))])
