"""The production path of a tus upload, whole: gunicorn serving the platform, PATCH bodies
read through wsgi.input (config.request_body) and written in pieces (imaging.uploads), on
one keep-alive connection, with chunk edges off the pieces, a chunk refused for its
checksum and one whose client hung up mid-body on the way, and the scan created at the end."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import http.client
import itertools
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from compliance.tokens import token_issue
from imaging.models import Scan, Upload
from tests.gunicorn import running_gunicorn
from tests.imaging import tus
from tests.imaging.worker import database_url

pytestmark = pytest.mark.django_db(transaction=True)

PIECE = 8192


@pytest.fixture
def web(tmp_path):
    """gunicorn on the test's database and media folder; tasks go to a throwaway broker folder."""
    log = tmp_path / "web.log"
    env = os.environ | {
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MPI_VAR_DIR": str(tmp_path / "var"),
        "CELERY_BROKER_URL": "filesystem://",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "IMAGING_UPLOAD_PIECE_BYTES": str(PIECE),
    }
    with running_gunicorn("config.wsgi", "--threads", "2", env=env, log=log) as port:
        yield port, log


def patch(conn, path: str, token: str, offset: int, body: bytes, checksum: bytes):
    conn.request(
        "PATCH",
        path,
        body=body,
        headers={
            "Authorization": f"Token {token}",
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": "sha256 " + base64.b64encode(checksum).decode(),
        },
    )
    response = conn.getresponse()
    response.read()
    return response


def hang_up_mid_body(port: int, path: str, token: str, chunk: bytes) -> None:
    """A PATCH announcing ``chunk`` whose client sends a third of it and stops: answered 400
    incomplete_body, and nothing of it kept (the caller checks the offset, the end the bytes)."""
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {len(chunk)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(head + chunk[: len(chunk) // 3])
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while part := conn.recv(65536):
            answer += part
    assert answer.startswith(b"HTTP/1.1 400"), answer[:500]
    assert b'"incomplete_body"' in answer
    deadline = time.monotonic() + 10  # the server is done with the upload once its lock is free
    while time.monotonic() < deadline:
        with open(Path(settings.MEDIA_ROOT) / Upload.objects.get().path, "rb") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
    assert (Path(settings.MEDIA_ROOT) / Upload.objects.get().path).stat().st_size == 0


def test_a_scan_uploaded_through_gunicorn_lands_byte_exact(api, pipeline, web):
    port, log = web
    data = Path(pipeline.sim["measurement"]).read_bytes()
    assert len(data) > 6 * PIECE
    created = tus.create(
        api(pipeline.user),
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=24,
        sha256=tus.sha256_hex(data),
    )
    assert created.status_code == 201, created.content
    path = urlsplit(created["Location"]).path
    # What a scanner bridge holds: a token scoped to the upload endpoints.
    token = token_issue(user=pipeline.user, name="scanner bridge", scope="scanner").key
    edges = [0, 10_001, 10_001 + 3 * PIECE, 10_001 + 3 * PIECE + 4096, len(data)]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        refused = patch(conn, path, token, 0, data[: edges[1]], hashlib.sha256(b"other bytes").digest())
        assert refused.status == 460
        assert Upload.objects.get().offset == 0
        hang_up_mid_body(port, path, token, data[: edges[2]])
        assert Upload.objects.get().offset == 0
        for start, end in itertools.pairwise(edges):
            chunk = data[start:end]
            answer = patch(conn, path, token, start, chunk, hashlib.sha256(chunk).digest())
            assert answer.status == 204, log.read_text()[-3000:]
            assert int(answer.getheader("Upload-Offset")) == end
    finally:
        conn.close()
    scan = Scan.objects.get(pk=int(answer.getheader("Scan-Id")))
    assert (Path(settings.MEDIA_ROOT) / scan.file).read_bytes() == data
    assert scan.sha256 == tus.sha256_hex(data)
    assert Upload.objects.get().status == "completed"
