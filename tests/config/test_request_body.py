"""config.request_body: the body read through documented interfaces only (Django's
``request.read`` over ``wsgi.input``). Under a real gunicorn it arrives whole and byte-exact,
and gunicorn's own parsing of the connection stays right for the next request (keep-alive,
pipelining, a body the view did not finish); a body that ends early is refused, never taken
for a whole one."""

from __future__ import annotations

import hashlib
import io
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.http import UnreadablePostError

from config.api_errors import status_for
from config.request_body import IncompleteBody, RequestBody
from tests.gunicorn import running_gunicorn


def serve(worker_class: str, folder: Path):
    """gunicorn serving tests/config/gunicorn_body_app.py."""
    env = os.environ | {"MPI_VAR_DIR": str(folder / "var"), "DJANGO_SETTINGS_MODULE": "config.settings"}
    options = ["--worker-class", worker_class]
    if worker_class == "gthread":
        options += ["--threads", "2"]
    with running_gunicorn(
        "tests.config.gunicorn_body_app:application", *options, env=env, log=folder / "server.log"
    ) as port:
        yield port


@pytest.fixture(scope="module", params=["sync", "gthread"])
def server(request, tmp_path_factory):
    """The sync worker (production's docker-compose) and the threaded one (the upload benchmark)."""
    yield from serve(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def keepalive_server(tmp_path_factory):
    """The threaded worker: the sync worker closes every connection after one response."""
    yield from serve("gthread", tmp_path_factory.mktemp("keepalive"))


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)  # a broken reader fails, never hangs


def request_bytes(body: bytes, query: str = "") -> bytes:
    head = (
        f"PATCH /upload?{query} HTTP/1.1\r\nHost: test\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def read_response(conn: socket.socket, pending: bytearray) -> str:
    """One HTTP/1.1 response with Content-Length from the connection; the bytes after it
    stay in ``pending`` for the next call."""
    while b"\r\n\r\n" not in pending:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed; got {bytes(pending)!r}"
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK", head
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "connection closed inside a response"
        rest += chunk
    pending[:] = rest[length:]
    return rest[:length].decode()


def expected(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


@pytest.mark.parametrize("step", [1 << 20, 4093])
def test_a_large_body_arrives_byte_exact(server, step):
    body = os.urandom(24 << 20)
    with connect(server) as conn:
        conn.sendall(request_bytes(body, f"step={step}"))
        assert read_response(conn, bytearray()) == expected(body)


def test_pipelined_requests_each_get_their_own_body(keepalive_server):
    """All requests go out in one send: gunicorn's first read holds the whole first body and
    the start of the second request when the first view starts. Each view gets exactly its
    own body, and never reads into the next request."""
    bodies = [os.urandom(3_000), os.urandom(2_000), os.urandom(100_000), b""]
    with connect(keepalive_server) as conn:
        conn.sendall(b"".join(request_bytes(body) for body in bodies))
        pending = bytearray()
        for body in bodies:
            assert read_response(conn, pending) == expected(body)


def test_a_body_the_view_leaves_unread_is_drained_before_the_next_request(keepalive_server):
    """The view stops 50,000 bytes short; gunicorn drains them (up to 64 KiB; it closes the
    connection past that) and the next request on the connection is parsed from its first byte."""
    body, after = os.urandom(1_050_000), os.urandom(70_000)
    with connect(keepalive_server) as conn:
        pending = bytearray()
        conn.sendall(request_bytes(body, "limit=1000000"))
        assert read_response(conn, pending) == f"1000000 {hashlib.sha256(body[:1_000_000]).hexdigest()}"
        conn.sendall(request_bytes(after))
        assert read_response(conn, pending) == expected(after)


def test_a_client_that_hangs_up_mid_body_does_not_take_the_server_down(server):
    with connect(server) as conn:
        conn.sendall(request_bytes(os.urandom(1 << 20))[:300_000])
    body = os.urandom(10_000)
    with connect(server) as conn:
        conn.sendall(request_bytes(body))
        assert read_response(conn, bytearray()) == expected(body)


def request_with(body: bytes, content_length: int | str | None, read=None) -> SimpleNamespace:
    """What RequestBody uses of a Django request: META and read(n) (here over ``body``)."""
    meta = {} if content_length is None else {"CONTENT_LENGTH": str(content_length)}
    return SimpleNamespace(META=meta, read=read or io.BytesIO(body).read)


def read_all(source: RequestBody, step: int = 4093) -> bytes:
    received = bytearray()
    while data := source.read(step):
        received += data
    return bytes(received)


def test_a_whole_body_is_read_to_its_end_and_never_past_it():
    body, after = os.urandom(100_000), b"PATCH /next HTTP/1.1\r\n"
    stream = io.BytesIO(body + after)  # a stream that holds more than this body
    assert read_all(RequestBody(request_with(b"", len(body), read=stream.read))) == body
    assert stream.read() == after


@pytest.mark.parametrize("content_length", [None, "", "not a number", "-5", 0])
def test_no_usable_content_length_is_an_empty_body(content_length):
    """As Django reads such a request: no body (a chunked body never reaches a WSGI view)."""
    assert read_all(RequestBody(request_with(b"bytes", content_length))) == b""


def test_a_body_that_ends_before_its_content_length_is_refused():
    """The client hung up after 30,000 of 50,000 bytes: wsgi.input returns what came, then b""."""
    body = os.urandom(30_000)
    source = RequestBody(request_with(body, 50_000))
    with pytest.raises(IncompleteBody) as refused:
        read_all(source)
    assert refused.value.code == "incomplete_body" and status_for(refused.value.code) == 400
    assert "after 30000 of its 50000 bytes (the connection ended)" in refused.value.message


def test_a_connection_that_fails_mid_body_is_refused():
    """Django turns the server's OSError into UnreadablePostError (an OSError)."""
    arrived = io.BytesIO(os.urandom(8_000))

    def read(size):
        if data := arrived.read(size):
            return data
        raise UnreadablePostError("Connection reset by peer")

    with pytest.raises(IncompleteBody) as refused:
        read_all(RequestBody(request_with(b"", 20_000, read=read)))
    assert "after 8000 of its 20000 bytes (Connection reset by peer)" in refused.value.message


def test_a_client_that_stops_sending_mid_body_is_answered_400_through_gunicorn(server):
    """The announced body never arrives whole: the view is told, instead of taking the part
    that came for the whole."""
    body = os.urandom(1 << 20)
    request = request_bytes(body)
    with connect(server) as conn:
        conn.sendall(request[:300_000])
        conn.shutdown(socket.SHUT_WR)  # the client sends no more; it still listens
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head_length = len(request) - len(body)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request"), answer[:300]
    assert (
        f"incomplete_body: The request body ended after {300_000 - head_length} of its {len(body)} bytes".encode()
        in answer
    )
