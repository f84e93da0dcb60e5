"""Read a large request body into buffers the caller owns, with one copy.

A scan upload PATCH carries up to hundreds of MiB. Read through ``wsgi.input``, gunicorn
(the production web server) hands the body over in fresh ``bytes`` objects assembled in
``BytesIO`` buffers: four copies and a fresh 1 MiB allocation per MiB, about half of the
web process's time in a profile of ``benchmarks/upload.py``. A view asks ``body_source``
instead for a ``BodySource``, whose ``readinto(buffer)`` fills the caller's buffer:

* under gunicorn, with ``recv_into`` straight from the socket (plain TCP or gunicorn's own
  TLS): one copy, from the kernel into the caller's buffer;
* anywhere else (Django's test client, ``runserver``, a chunked body, a body Django has
  already read) through ``request.read``: slower, same bytes.

The upload writes those buffers with ``O_DIRECT`` (``imaging.uploads``): the body never
passes through the page cache. An earlier version spliced socket -> pipe -> file inside
the kernel; the page-cache copy that still needed was most of its cost (2 GiB over
loopback on this project's 2-core VM: 2.1-2.6 s of server CPU per GiB, against 0.9 s for
``recv_into`` into reused buffers written with O_DIRECT).

Gunicorn still owns the connection, so the gunicorn source keeps its accounting right:

* bytes gunicorn already holds (received together with the headers) come first; any it
  holds beyond the end of this body (a pipelined next request) go back;
* the body reader's remaining length is lowered by every byte taken from the socket, so
  after the view gunicorn drains exactly what the view left unread and parses the next
  request on a keep-alive connection from the right byte;
* held bytes not yet handed out when the source closes are given back.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Protocol

from django.http import HttpRequest


class BodySource(Protocol):
    def readinto(self, buffer: memoryview) -> int:
        """Fill the start of ``buffer`` (not empty) with the next body bytes: how many (at
        least one), or 0 at the end of the body. Any object with a file's ``readinto`` is one."""


class _RequestBody:
    """The body through Django's ``request.read`` (the test client, runserver)."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    def readinto(self, buffer: memoryview) -> int:
        data = self.request.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _GunicornBody:
    """The rest of a Content-Length body, taken from gunicorn's socket."""

    def __init__(self, sock: socket.socket, reader) -> None:
        self.sock = sock
        self.reader = reader  # gunicorn.http.body.LengthReader: .length = bytes not yet taken
        held = reader.unreader.take_buffered()
        if len(held) > reader.length:
            reader.unreader.unread(held[reader.length :])
            held = held[: reader.length]
        self.held = memoryview(held)

    def readinto(self, buffer: memoryview) -> int:
        wanted = min(len(buffer), self.reader.length)  # held bytes are part of it
        if wanted <= 0:
            return 0
        if self.held:
            count = min(wanted, len(self.held))
            buffer[:count] = self.held[:count]
            self.held = self.held[count:]
        else:
            count = self.sock.recv_into(buffer, wanted)
            if count == 0:
                raise ConnectionResetError("the client closed the connection before the end of the request body")
        self.reader.length -= count  # taken, whatever happens next
        return count

    def close(self) -> None:
        if self.held:
            self.reader.unreader.unread(bytes(self.held))
            self.held = memoryview(b"")


def _gunicorn_body(request: HttpRequest) -> _GunicornBody | None:
    environ = request.META
    sock, body = environ.get("gunicorn.socket"), environ.get("wsgi.input")
    reader = getattr(body, "reader", None)
    if sock is None or body is None or reader is None or type(reader).__name__ != "LengthReader":
        return None
    if not hasattr(reader, "unreader") or not hasattr(reader.unreader, "take_buffered"):
        return None  # a gunicorn without the interface this relies on (take_buffered came in 23.x)
    if getattr(request, "_read_started", False) or body.buf.getbuffer().nbytes:
        return None  # part of the body was already read through wsgi.input: stay on that path
    return _GunicornBody(sock, reader)


@contextlib.contextmanager
def body_source(request: HttpRequest) -> Iterator[BodySource]:
    """The request body as a ``BodySource``: the fastest way this server allows."""
    direct = _gunicorn_body(request)
    if direct is None:
        yield _RequestBody(request)
        return
    try:
        yield direct
    finally:
        direct.close()
