"""Read a large request body into a caller's buffer, without the server's copies.

A scan upload PATCH carries up to hundreds of MiB. Read through ``wsgi.input``, gunicorn
(the production web server) hands the body over in fresh ``bytes`` objects assembled in
``BytesIO`` buffers: four copies and a fresh 1 MiB allocation per MiB, about half of the
web process's time in a profile of ``benchmarks/upload.py``. ``body_reader`` gives the view one call instead,
``readinto(buffer) -> int``, which under gunicorn receives straight from the connection's
socket into the caller's (reused) buffer with ``recv_into``.

Gunicorn still owns the connection, so the reader keeps gunicorn's own accounting right:

* bytes gunicorn already holds (received together with the headers) are handed out
  first; any it holds beyond the end of this body (a pipelined next request) go back;
* the body reader's remaining length is lowered by every byte handed out, so after the
  view gunicorn drains exactly what the view left unread and parses the next request on a
  keep-alive connection from the right byte;
* bytes taken from gunicorn but not handed out when the reader closes are given back.

Anything else (Django's test client, ``runserver``, a chunked body, a body Django has
already read) falls back to ``request.read``: slower, same result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from django.http import HttpRequest

ReadInto = Callable[[memoryview], int]


class _GunicornSocketBody:
    """The rest of a Content-Length body, received from gunicorn's socket."""

    def __init__(self, sock, reader) -> None:
        self.sock = sock
        self.reader = reader  # gunicorn.http.body.LengthReader: .length = bytes not yet handed out
        held = reader.unreader.take_buffered()
        if len(held) > reader.length:
            reader.unreader.unread(held[reader.length:])
            held = held[:reader.length]
        self.held = memoryview(held)

    def readinto(self, buffer: memoryview) -> int:
        wanted = min(len(buffer), self.reader.length)
        if wanted <= 0:
            return 0
        if self.held:
            count = min(wanted, len(self.held))
            buffer[:count] = self.held[:count]
            self.held = self.held[count:]
        else:
            count = self.sock.recv_into(buffer, wanted)
            if count == 0:  # the client closed the connection before the end of the body
                raise ConnectionResetError("the client closed the connection before the end of the request body")
        self.reader.length -= count
        return count

    def close(self) -> None:
        if self.held:
            self.reader.unreader.unread(bytes(self.held))
            self.held = memoryview(b"")


def _gunicorn_body(request: HttpRequest) -> _GunicornSocketBody | None:
    environ = request.META
    sock, body = environ.get("gunicorn.socket"), environ.get("wsgi.input")
    reader = getattr(body, "reader", None)
    if sock is None or reader is None or type(reader).__name__ != "LengthReader":
        return None
    if not hasattr(reader, "unreader") or not hasattr(reader.unreader, "take_buffered"):
        return None  # a gunicorn without the interface this relies on (take_buffered came in 23.x)
    if getattr(request, "_read_started", False) or body.buf.getbuffer().nbytes:
        return None  # part of the body was already read through wsgi.input: stay on that path
    return _GunicornSocketBody(sock, reader)


def _read_copy(request: HttpRequest) -> ReadInto:
    def readinto(buffer: memoryview) -> int:
        data = request.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
    return readinto


@contextlib.contextmanager
def body_reader(request: HttpRequest) -> Iterator[ReadInto]:
    """``readinto(buffer) -> bytes written into buffer`` for the request body; 0 at its end."""
    direct = _gunicorn_body(request)
    if direct is None:
        yield _read_copy(request)
        return
    try:
        yield direct.readinto
    finally:
        direct.close()
