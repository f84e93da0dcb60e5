"""config.request_body under a real gunicorn: the body arrives whole and byte-exact,
straight from the socket (plain TCP or gunicorn's own TLS), and gunicorn's own parsing of
the connection is left right for the next request (keep-alive, pipelining, a body the view
did not finish)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from tests.gunicorn import running_gunicorn


def serve(worker_class: str, folder: Path, tls: bool = False):
    """gunicorn serving tests/config/gunicorn_body_app.py (with its own TLS and a throwaway
    self-signed certificate when ``tls``)."""
    env = os.environ | {"MPI_VAR_DIR": str(folder / "var"), "DJANGO_SETTINGS_MODULE": "config.settings"}
    options = ["--worker-class", worker_class]
    if worker_class == "gthread":
        options += ["--threads", "2"]
    if tls:
        key, cert = folder / "key.pem", folder / "cert.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        options += ["--keyfile", str(key), "--certfile", str(cert)]
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


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """gunicorn's own TLS: the socket the view reads is an SSLSocket."""
    yield from serve("gthread", tmp_path_factory.mktemp("tls"), tls=True)


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
    return f"{len(body)} {hashlib.sha256(body).hexdigest()} _GunicornBody"


@pytest.mark.parametrize("step", [1 << 20, 4093])
def test_a_large_body_arrives_byte_exact(server, step):
    body = os.urandom(24 << 20)
    with connect(server) as conn:
        conn.sendall(request_bytes(body, f"step={step}"))
        assert read_response(conn, bytearray()) == expected(body)


def test_a_body_behind_gunicorns_own_tls_arrives_byte_exact(tls_server):
    body = os.urandom(8 << 20)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the throwaway certificate
    with context.wrap_socket(connect(tls_server)) as conn:
        conn.sendall(request_bytes(body))
        assert read_response(conn, bytearray()) == expected(body)


def test_pipelined_requests_each_get_their_own_body(keepalive_server):
    """All requests go out in one send. gunicorn's first read (8 KiB) holds the whole first
    body and the start of the second request when the first view starts: the reader must
    hand out exactly the first body and give the rest back for gunicorn to parse."""
    bodies = [os.urandom(3_000), os.urandom(2_000), os.urandom(100_000), b""]
    with connect(keepalive_server) as conn:
        conn.sendall(b"".join(request_bytes(body) for body in bodies))
        pending = bytearray()
        for body in bodies:
            assert read_response(conn, pending) == expected(body)


def test_a_body_the_view_leaves_unread_is_drained_before_the_next_request(keepalive_server):
    """The view stops 50,000 bytes short; gunicorn drains them (it drains up to 64 KiB, and
    closes the connection past that) from the count the reader left it, and the next request
    on the connection is parsed from its first byte."""
    body, after = os.urandom(1_050_000), os.urandom(70_000)
    with connect(keepalive_server) as conn:
        pending = bytearray()
        conn.sendall(request_bytes(body, "limit=1000000"))
        assert read_response(conn, pending) == (f"1000000 {hashlib.sha256(body[:1_000_000]).hexdigest()} _GunicornBody")
        conn.sendall(request_bytes(after))
        assert read_response(conn, pending) == expected(after)


def test_a_client_that_hangs_up_mid_body_does_not_take_the_server_down(server):
    with connect(server) as conn:
        conn.sendall(request_bytes(os.urandom(1 << 20))[:300_000])
    body = os.urandom(10_000)
    with connect(server) as conn:
        conn.sendall(request_bytes(body))
        assert read_response(conn, bytearray()) == expected(body)


class FakeUnreader:
    """gunicorn's unreader, reduced to the bytes it holds."""

    def __init__(self, held: bytes) -> None:
        self.buf = held

    def take_buffered(self) -> bytes:
        held, self.buf = self.buf, b""
        return held

    def unread(self, data: bytes) -> None:
        self.buf = data + self.buf


class FakeLengthReader:
    def __init__(self, length: int, held: bytes) -> None:
        self.length, self.unreader = length, FakeUnreader(held)


def test_held_bytes_come_first_and_a_pipelined_request_is_given_back():
    """gunicorn received the first 5,000 body bytes with the headers; the rest comes from the
    socket, followed by the next request, which must stay unread. Odd buffer sizes cross
    every boundary (held -> socket, body -> next request)."""
    from config import request_body

    body = os.urandom(300_000)
    after = b"PATCH /next HTTP/1.1\r\n"
    client, server_side = socket.socketpair()
    reader = FakeLengthReader(len(body), body[:5_000])
    sender = threading.Thread(target=client.sendall, args=(body[5_000:] + after,))
    sender.start()
    source = request_body._GunicornBody(server_side, reader)
    received, buffer = bytearray(), memoryview(bytearray(4093))
    try:
        while count := source.readinto(buffer):
            received += buffer[:count]
    finally:
        source.close()
    sender.join()
    client.close()
    assert bytes(received) == body and reader.length == 0
    assert server_side.recv(100) == after  # nothing of the next request was taken
    server_side.close()


def test_held_bytes_beyond_the_body_and_unread_ones_go_back_to_gunicorn():
    """Held bytes past the body's end (a pipelined request) are given back at once; held
    body bytes the view never asked for are given back when the source closes."""
    from config import request_body

    body, after = b"a" * 100, b"GET /next HTTP/1.1\r\n\r\n"
    client, server_side = socket.socketpair()
    reader = FakeLengthReader(len(body), body + after)
    source = request_body._GunicornBody(server_side, reader)
    buffer = memoryview(bytearray(30))
    assert source.readinto(buffer) == 30 and bytes(buffer) == body[:30]
    source.close()
    assert reader.unreader.buf == body[30:] + after
    assert reader.length == 70  # what gunicorn still counts as body, and drains
    client.close()
    server_side.close()
