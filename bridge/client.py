"""HTTP client of "mpi-live/1": one keep-alive connection, the error envelope, retries.

Transient failures (connection refused or dropped, timeouts, 5xx, 408, 429) are retried
with capped exponential backoff (:class:`Backoff`: 0.1 s doubling to 5 s, given up after
``retry_for`` seconds of consecutive failure). A refusal (any other 4xx) raises
:class:`ServerRefused` with the server's code and message. The two 409 answers that carry
the server's position, ``frame_gap`` and ``frames_missing``, raise :class:`Resync` with
``next_frame`` so the caller continues from there.
"""

from __future__ import annotations

import http.client
import json
import math
import select
import ssl
import time
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from bridge.protocol import CONTENT_TYPE, PROTOCOL

#: Codes whose 409 answer carries next_frame: resynchronise instead of failing.
RESYNC_CODES = ("frame_gap", "frames_missing")
#: Statuses that mean "try again later" (besides any 5xx).
RETRY_STATUSES = (408, 429)


class BridgeError(Exception):
    """The stream cannot go on; ``str()`` is one line for the operator."""


class ServerRefused(BridgeError):
    def __init__(self, status: int, code: str, message: str, body: dict[str, Any], what: str) -> None:
        super().__init__(f"{what}: the server refused ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class GaveUp(BridgeError):
    """Transient failures went on for longer than ``retry_for`` seconds."""


class Transient(Exception):
    """One failed attempt that may succeed later (dropped connection, timeout, 5xx, 429)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Resync(Exception):
    """409 frame_gap / frames_missing: the server expects ``next_frame`` next."""

    def __init__(self, code: str, next_frame: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.next_frame = next_frame
        self.message = message


class Backoff:
    """Capped exponential backoff over one outage; :meth:`reset` after a success."""

    def __init__(
        self,
        *,
        retry_for_s: float = 300.0,
        first_s: float = 0.1,
        max_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        log: TextIO | None = None,
    ) -> None:
        self.retry_for_s = retry_for_s
        self.first_s = first_s
        self.max_s = max_s
        self.clock = clock
        self.sleep = sleep
        self.log = log
        self.retries = 0
        self._outage_since: float | None = None
        self._delay = first_s

    def reset(self) -> None:
        self._outage_since = None
        self._delay = self.first_s

    def wait(self, what: str, failure: Transient) -> None:
        """Sleep before the next attempt, or raise :class:`GaveUp` when the outage is too long."""
        now = self.clock()
        if self._outage_since is None:
            self._outage_since = now
        elapsed = now - self._outage_since
        if elapsed >= self.retry_for_s:
            raise GaveUp(f"{what}: gave up after {elapsed:.0f} s of failures: {failure.reason}")
        delay = self._delay
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, self.max_s))
        delay = min(delay, self.retry_for_s - elapsed)
        self._delay = min(self._delay * 2, self.max_s)
        self.retries += 1
        if self.log is not None:
            print(f"bridge: {what}: {failure.reason}; retry {self.retries} in {delay:.1f} s", file=self.log, flush=True)
        self.sleep(delay)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: the backoff applies
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class LiveClient:
    """The scanner side of the live-session API at ``url`` (the site's base URL)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        backoff: Backoff | None = None,
        user_agent: str = f"mpi-bridge ({PROTOCOL})",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BridgeError(f"--url must be an http:// or https:// address, got {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.user_agent = user_agent
        self._conn: http.client.HTTPConnection | None = None
        self.bytes_sent = 0
        self.requests = 0

    # -- one attempt --------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            # A kept-alive connection has nothing to read between requests: readable means
            # the server closed it while idle (keep-alive timeout), so open a fresh one.
            try:
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                readable = [sock]
            if readable:
                self.close()
        if self._conn is None:
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout_s, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def session_path(self, session_id: str, action: str = "") -> str:
        path = f"{self.prefix}/api/v1/live-sessions/{quote(str(session_id), safe='')}/"
        return path + (f"{action}/" if action else "")

    def attempt(self, method: str, path: str, body: bytes | None, content_type: str | None) -> tuple[int, Any, str]:
        """Send one request; (status, parsed JSON or None, Retry-After). Raises Transient on I/O failure."""
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json", "User-Agent": self.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        conn = self._connection()
        self.requests += 1
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
            except OSError:
                # The server may have answered (and closed) before reading the whole body:
                # take its answer if there is one, otherwise this is a dropped connection.
                response = conn.getresponse()
            else:
                response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Transient(
                f"connection failed ({type(exc).__name__}: {' '.join(str(exc).split()) or 'no detail'})"
            ) from None
        if body:
            self.bytes_sent += len(body)
        if response.will_close:
            self.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = {"_text": raw[:300].decode("utf-8", errors="replace")}
        return response.status, data, response.getheader("Retry-After") or ""

    def call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        """One request: the parsed 2xx answer; Transient, Resync or ServerRefused otherwise."""
        what = f"{method} {path}"
        status, data, retry_after = self.attempt(method, path, body, content_type)
        if 200 <= status < 300:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        code = str(error.get("code", "")) if isinstance(error, dict) else ""
        message = str(error.get("message", "")) if isinstance(error, dict) else ""
        if not message and isinstance(data, dict):
            message = str(data.get("_text") or data.get("detail") or "")
        if status >= 500 or status in RETRY_STATUSES:
            raise Transient(
                f"HTTP {status} {code or ''}".rstrip() + (f": {message}" if message else ""), _retry_after(retry_after)
            )
        if status == 409 and code in RESYNC_CODES and isinstance(data, dict):
            next_frame = data.get("next_frame")
            if isinstance(next_frame, int) and not isinstance(next_frame, bool) and next_frame >= 0:
                raise Resync(code, next_frame, message)
        raise ServerRefused(
            status, code or f"http_{status}", message or "(no message)", data if isinstance(data, dict) else {}, what
        )

    def call_retrying(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None, *, reset: bool = True
    ) -> Any:
        """:meth:`call`, retrying transient failures with the backoff (same request again).

        ``reset=False`` leaves the outage open after a success (a resynchronising GET: the
        outage ends when frames go through again).
        """
        while True:
            try:
                result = self.call(method, path, body, content_type)
            except Transient as failure:
                self.backoff.wait(f"{method} {path}", failure)
                continue
            if reset:
                self.backoff.reset()
            return result

    # -- the protocol's requests --------------------------------------------------------

    def get_session(self, session_id: str, *, reset: bool = True) -> dict[str, Any]:
        return self.call_retrying("GET", self.session_path(session_id), reset=reset)

    def start(self, session_id: str, header: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
        return self.call_retrying("POST", self.session_path(session_id, "start"), body, "application/json")

    def send_frames(self, session_id: str, message: bytes) -> dict[str, Any]:
        """One attempt (the caller resynchronises from the session after a failure)."""
        return self.call("POST", self.session_path(session_id, "frames"), message, CONTENT_TYPE)

    def end(self, session_id: str, frames_sent: int) -> dict[str, Any]:
        body = json.dumps({"frames_sent": int(frames_sent)}).encode("ascii")
        return self.call_retrying("POST", self.session_path(session_id, "end"), body, "application/json")

    def mark(self, session_id: str, kind: str, note: str = "") -> dict[str, Any]:
        """POST marks: an injection mark (a person's token: the scanner token may not mark)."""
        body = json.dumps({"kind": kind, "note": note}).encode("utf-8")
        return self.call_retrying("POST", self.session_path(session_id, "marks"), body, "application/json")

    def abort(self, session_id: str, reason: str) -> dict[str, Any]:
        body = json.dumps({"reason": reason}).encode("utf-8")
        return self.call_retrying("POST", self.session_path(session_id, "abort"), body, "application/json")
