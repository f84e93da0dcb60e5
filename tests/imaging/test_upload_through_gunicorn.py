"""The production path of a tus upload, whole: gunicorn serving the platform, PATCH bodies
read straight from its socket (config.request_body), received into pieces and written with
O_DIRECT (imaging.uploads), on one keep-alive connection, with chunk edges off the 4 KiB
blocks, a chunk refused for its checksum on the way, and the scan created at the end."""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import os
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
