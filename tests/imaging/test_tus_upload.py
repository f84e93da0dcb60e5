"""The tus 1.0.0 upload: creation, offset, chunks with sha256 checksums, resume, completion."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Scan, Upload
from tests.imaging import tus


def _start(api, pipeline, data: bytes, hours=24.0):
    client = api(pipeline.user)
    created = tus.create(
        client,
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=hours,
        sha256=tus.sha256_hex(data),
    )
    return client, created


def test_it_announces_the_protocol(api, imaging_a):
    response = api(imaging_a).options("/api/v1/uploads/")
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert set(response["Tus-Extension"].split(",")) == {"creation", "checksum", "termination"}
    assert response["Tus-Checksum-Algorithm"] == "sha256"
    assert int(response["Tus-Max-Size"]) == 10 * 1024**3


def test_it_uploads_in_chunks_resumes_and_creates_a_received_scan(api, pipeline, settings):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    assert created.status_code == 201
    assert created["Tus-Resumable"] == "1.0.0"
    url = created["Location"]
    upload = Upload.objects.get()
    assert upload.offset == 0 and upload.length == len(data)

    half = len(data) // 2
    assert tus.patch(client, url, offset=0, data=data[:10_000]).status_code == 204
    # The connection drops: the client asks where to resume.
    offset = int(tus.head(client, url)["Upload-Offset"])
    assert offset == 10_000
    assert tus.patch(client, url, offset=offset, data=data[offset:half]).status_code == 204
    last = tus.patch(client, url, offset=half, data=data[half:])
    assert last.status_code == 204
    assert int(last["Upload-Offset"]) == len(data)

    scan = Scan.objects.get(pk=int(last["Scan-Id"]))
    assert scan.status == "received"
    assert scan.sha256 == tus.sha256_hex(data)
    assert (Path(settings.MEDIA_ROOT) / scan.file).read_bytes() == data
    assert not (Path(settings.MEDIA_ROOT) / upload.path).exists()
    upload.refresh_from_db()
    assert upload.status == "completed"
    actions = list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True))
    assert actions[-3:] == [AuditAction.UPLOAD_STARTED, AuditAction.UPLOAD_COMPLETED, AuditAction.SCAN_STATUS_CHANGED]


def test_it_refuses_a_chunk_with_a_wrong_checksum_and_the_upload_continues(api, pipeline, settings):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    url = created["Location"]
    assert tus.patch(client, url, offset=0, data=data[:4096]).status_code == 204

    corrupted = bytes([data[4096] ^ 0xFF]) + data[4097:8192]
    refused = tus.patch(client, url, offset=4096, data=corrupted, checksum=tus.checksum_header(data[4096:8192]))
    assert refused.status_code == 460
    assert refused.reason_phrase == "Checksum Mismatch"
    assert refused.json()["error"]["code"] == "checksum_mismatch"
    assert int(tus.head(client, url)["Upload-Offset"]) == 4096
    assert (Path(settings.MEDIA_ROOT) / Upload.objects.get().path).stat().st_size == 4096

    final = tus.patch(client, url, offset=4096, data=data[4096:])
    assert final.status_code == 204
    assert Scan.objects.get().sha256 == tus.sha256_hex(data)


def test_it_refuses_a_patch_at_the_wrong_offset(api, pipeline):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    response = tus.patch(client, created["Location"], offset=100, data=data[100:200])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "offset_mismatch"
    assert Upload.objects.get().offset == 0


def test_it_refuses_another_tus_version_and_another_media_type(api, pipeline):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    url = created["Location"]
    old = client.generic(
        "PATCH",
        url,
        data[:10],
        content_type="application/offset+octet-stream",
        HTTP_UPLOAD_OFFSET="0",
        HTTP_TUS_RESUMABLE="0.2.2",
    )
    assert old.status_code == 412
    assert old["Tus-Version"] == "1.0.0"
    wrong = client.generic("PATCH", url, data[:10], content_type="application/json", HTTP_UPLOAD_OFFSET="0", **tus.TUS)
    assert wrong.status_code == 415
    assert Upload.objects.get().offset == 0


def test_it_refuses_a_body_past_the_upload_length(api, pipeline, settings):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    response = tus.patch(client, created["Location"], offset=0, data=data + b"extra bytes")
    assert response.status_code == 413
    upload = Upload.objects.get()
    assert upload.offset == 0
    assert (Path(settings.MEDIA_ROOT) / upload.path).stat().st_size == 0
    assert Scan.objects.count() == 0


def test_it_terminates_an_upload(api, pipeline, settings, django_capture_on_commit_callbacks):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    url = created["Location"]
    tus.patch(client, url, offset=0, data=data[:1000])
    path = Path(settings.MEDIA_ROOT) / Upload.objects.get().path
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(url, **tus.TUS).status_code == 204
    assert Upload.objects.get().status == "terminated"
    assert not path.exists()
    assert tus.head(client, url).status_code == 404
    # A PATCH to a terminated upload: gone (404, its own code), and nothing written.
    events = AuditEvent.objects.count()
    refused = tus.patch(client, url, offset=1000, data=data[1000:2000])
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "upload_terminated"
    assert Upload.objects.get().offset == 1000 and AuditEvent.objects.count() == events


def test_a_chunk_of_many_pieces_is_hashed_in_order_and_written_whole(api, pipeline, settings):
    """4 KiB pieces: the sha256 thread hashes many pieces within one PATCH while the body
    goes on arriving. Out-of-order or missed pieces would fail the checksum."""
    settings.IMAGING_UPLOAD_PIECE_BYTES = 4096
    data = Path(pipeline.sim["measurement"]).read_bytes()
    assert len(data) > 20 * 4096
    client, created = _start(api, pipeline, data)
    url = created["Location"]
    tampered = data[:-1] + bytes([data[-1] ^ 1])  # only the last piece differs
    refused = tus.patch(client, url, offset=0, data=tampered, checksum=tus.checksum_header(data))
    assert refused.status_code == 460
    assert (Path(settings.MEDIA_ROOT) / Upload.objects.get().path).stat().st_size == 0

    accepted = tus.patch(client, url, offset=0, data=data, checksum=tus.checksum_header(data))
    assert accepted.status_code == 204, accepted.content
    scan = Scan.objects.get(pk=int(accepted["Scan-Id"]))
    assert (Path(settings.MEDIA_ROOT) / scan.file).read_bytes() == data


def test_a_connection_dropped_mid_chunk_leaves_the_upload_as_it_was(api, pipeline, settings):
    from imaging.services.scan_uploads import upload_append

    settings.IMAGING_UPLOAD_PIECE_BYTES = 4096
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    assert tus.patch(client, created["Location"], offset=0, data=data[:10_000]).status_code == 204
    upload = Upload.objects.get()
    events = AuditEvent.objects.count()
    sent = {"bytes": 10_000}

    def readinto(buffer):  # 30,000 bytes arrive, then the client is gone
        if sent["bytes"] >= 40_000:
            raise ConnectionResetError("the client closed the connection before the end of the request body")
        count = min(len(buffer), 40_000 - sent["bytes"])
        buffer[:count] = data[sent["bytes"] : sent["bytes"] + count]
        sent["bytes"] += count
        return count

    with pytest.raises(ConnectionResetError):
        upload_append(
            actor=pipeline.user, upload=upload, offset=10_000, source=SimpleNamespace(readinto=readinto), checksum=None
        )
    upload.refresh_from_db()
    assert upload.offset == 10_000
    assert (Path(settings.MEDIA_ROOT) / upload.path).read_bytes() == data[:10_000]
    assert AuditEvent.objects.count() == events
    assert int(tus.head(client, created["Location"])["Upload-Offset"]) == 10_000


def test_a_chunk_without_upload_checksum_is_written_unhashed_and_the_file_still_checked(api, pipeline, settings):
    """Upload-Checksum is optional in tus: without it the PATCH has nothing to compare and
    skips hashing; the whole-file sha256 is still verified by the ingest task."""
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client, created = _start(api, pipeline, data)
    response = tus.patch(client, created["Location"], offset=0, data=data, checksum=None)
    assert response.status_code == 204, response.content
    scan = Scan.objects.get(pk=int(response["Scan-Id"]))
    assert (Path(settings.MEDIA_ROOT) / scan.file).read_bytes() == data
    assert scan.sha256 == tus.sha256_hex(data)  # declared at creation, checked by scan_validate
