"""Move a large request body into a file, with as few copies as the server allows.

A scan upload PATCH carries up to hundreds of MiB. Read through ``wsgi.input``, gunicorn
(the production web server) hands the body over in fresh ``bytes`` objects assembled in
``BytesIO`` buffers: four copies and a fresh 1 MiB allocation per MiB, about half of the
web process's time in a profile of ``benchmarks/upload.py``. A view asks ``body_source``
instead for a ``BodySource``, whose ``write_into(fd, limit)`` moves body bytes into a file:

* under gunicorn on a plain TCP socket, with ``splice(2)``: socket -> pipe -> file inside
  the kernel, no byte passing through Python (2 GiB from a loopback socket into a new
  file: 0.7 s of CPU, against 3.7-5.1 s with ``recv_into`` + ``write`` on the same VM);
* under gunicorn behind its own TLS (an ``SSLSocket``), with ``recv_into`` one reused
  buffer and ``write``;
* anywhere else (Django's test client, ``runserver``, a chunked body, a body Django has
  already read) through ``request.read``: slower, same bytes.

Gunicorn still owns the connection, so the gunicorn sources keep its accounting right:

* bytes gunicorn already holds (received together with the headers) are written first;
  any it holds beyond the end of this body (a pipelined next request) go back;
* the body reader's remaining length is lowered by every byte taken from the socket, so
  after the view gunicorn drains exactly what the view left unread and parses the next
  request on a keep-alive connection from the right byte;
* held bytes not yet written when the source closes are given back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from typing import Protocol

from django.http import HttpRequest

PIPE_BYTES = 1024 * 1024  # asked of F_SETPIPE_SZ; /proc/sys/fs/pipe-max-size is 1 MiB by default
COPY_BUFFER_BYTES = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class BodySource(Protocol):
    def write_into(self, fd: int, limit: int) -> int:
        """Move at most ``limit`` (> 0) body bytes to ``fd`` at its file position; how many
        were moved (at least one), or 0 at the end of the body."""


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ReadIntoSource:
    """Any ``readinto(buffer) -> int`` (a file's, a request's) through one reused buffer."""

    def __init__(self, readinto: Callable[[memoryview], int], buffer_bytes: int = COPY_BUFFER_BYTES) -> None:
        self.readinto = readinto
        self.buffer = memoryview(bytearray(buffer_bytes))

    def write_into(self, fd: int, limit: int) -> int:
        count = self.readinto(self.buffer[:min(limit, len(self.buffer))])
        write_all(fd, self.buffer[:count])
        return count


class _GunicornBody:
    """The rest of a Content-Length body, taken from gunicorn's socket."""

    def __init__(self, sock: socket.socket, reader) -> None:
        self.sock = sock
        self.reader = reader  # gunicorn.http.body.LengthReader: .length = bytes not yet taken
        held = reader.unreader.take_buffered()
        if len(held) > reader.length:
            reader.unreader.unread(held[reader.length:])
            held = held[:reader.length]
        self.held = memoryview(held)
        self.pipe: tuple[int, int] | None = None
        self.buffer: memoryview | None = None
        # splice(2) needs the socket's own bytes (no TLS layer) and a blocking descriptor.
        self.splice = hasattr(os, "splice") and type(sock) is socket.socket and sock.gettimeout() is None

    def write_into(self, fd: int, limit: int) -> int:
        wanted = min(limit, self.reader.length)  # held bytes are part of it
        if wanted <= 0:
            return 0
        if self.held:
            count = min(wanted, len(self.held))
            write_all(fd, self.held[:count])
            self.held = self.held[count:]
            self.reader.length -= count
            return count
        return self._splice(fd, wanted) if self.splice else self._copy(fd, wanted)

    def _splice(self, fd: int, wanted: int) -> int:
        if self.pipe is None:
            self.pipe = os.pipe()
            with contextlib.suppress(OSError):  # a smaller pipe only means more calls
                fcntl.fcntl(self.pipe[1], _F_SETPIPE_SZ, PIPE_BYTES)
        try:
            count = os.splice(self.sock.fileno(), self.pipe[1], min(wanted, PIPE_BYTES))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.splice = False  # this socket cannot be spliced from: copy instead (nothing was taken)
            return self._copy(fd, wanted)
        if count == 0:
            raise ConnectionResetError("the client closed the connection before the end of the request body")
        self.reader.length -= count  # taken from the socket, whatever happens next
        left = count
        while left:
            try:
                left -= os.splice(self.pipe[0], fd, left)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.splice = False  # a file system that takes no splice: empty the pipe by copying
                while left:
                    data = os.read(self.pipe[0], left)
                    write_all(fd, data)
                    left -= len(data)
        return count

    def _copy(self, fd: int, wanted: int) -> int:
        if self.buffer is None:
            self.buffer = memoryview(bytearray(COPY_BUFFER_BYTES))
        count = self.sock.recv_into(self.buffer, min(wanted, len(self.buffer)))
        if count == 0:
            raise ConnectionResetError("the client closed the connection before the end of the request body")
        self.reader.length -= count
        write_all(fd, self.buffer[:count])
        return count

    def close(self) -> None:
        if self.held:
            self.reader.unreader.unread(bytes(self.held))
            self.held = memoryview(b"")
        if self.pipe is not None:
            for end in self.pipe:
                os.close(end)
            self.pipe = None


def _gunicorn_body(request: HttpRequest) -> _GunicornBody | None:
    environ = request.META
    sock, body = environ.get("gunicorn.socket"), environ.get("wsgi.input")
    reader = getattr(body, "reader", None)
    if sock is None or reader is None or type(reader).__name__ != "LengthReader":
        return None
    if not hasattr(reader, "unreader") or not hasattr(reader.unreader, "take_buffered"):
        return None  # a gunicorn without the interface this relies on (take_buffered came in 23.x)
    if getattr(request, "_read_started", False) or body.buf.getbuffer().nbytes:
        return None  # part of the body was already read through wsgi.input: stay on that path
    return _GunicornBody(sock, reader)


def _request_readinto(request: HttpRequest) -> Callable[[memoryview], int]:
    def readinto(buffer: memoryview) -> int:
        data = request.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
    return readinto


@contextlib.contextmanager
def body_source(request: HttpRequest) -> Iterator[BodySource]:
    """The request body as a ``BodySource``: the fastest way this server allows."""
    direct = _gunicorn_body(request)
    if direct is None:
        yield ReadIntoSource(_request_readinto(request))
        return
    try:
        yield direct
    finally:
        direct.close()
