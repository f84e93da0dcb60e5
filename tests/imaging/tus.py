"""A small tus 1.0.0 client over DRF's APIClient (tests) or requests (benchmark)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from imaging.uploads import encode_metadata

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_header(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


def create(client, *, length: int, subject, injection, scanner, hours: float, sha256: str, filename="scan.mdf"):
    meta = encode_metadata(
        {
            "subject": subject,
            "injection": injection,
            "hours": hours,
            "scanner": scanner,
            "sha256": sha256,
            "filename": filename,
        }
    )
    return client.post("/api/v1/uploads/", HTTP_UPLOAD_LENGTH=str(length), HTTP_UPLOAD_METADATA=meta, **TUS)


def patch(client, url: str, *, offset: int, data: bytes, checksum: str | None = "auto"):
    headers = {"HTTP_UPLOAD_OFFSET": str(offset), **TUS}
    if checksum == "auto":
        headers["HTTP_UPLOAD_CHECKSUM"] = checksum_header(data)
    elif checksum is not None:
        headers["HTTP_UPLOAD_CHECKSUM"] = checksum
    return client.generic("PATCH", url, data, content_type="application/offset+octet-stream", **headers)


def head(client, url: str):
    return client.head(url, **TUS)


def upload_file(client, path, *, pipeline, hours: float, chunk: int = 32 * 1024, filename=None):
    """Create and send the whole file; returns (create response, last PATCH response)."""
    data = Path(path).read_bytes()
    created = create(
        client,
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=hours,
        sha256=sha256_hex(data),
        filename=filename or Path(path).name,
    )
    assert created.status_code == 201, created.content
    url = created["Location"]
    response = None
    for offset in range(0, len(data), chunk):
        response = patch(client, url, offset=offset, data=data[offset : offset + chunk])
        assert response.status_code == 204, response.content
    return created, response


def create_calibration(client, *, length: int, scanner, sha256: str, filename="calibration.mdf"):
    """tus creation of a calibration upload (Upload-Metadata kind calibration)."""
    meta = encode_metadata({"kind": "calibration", "scanner": scanner, "sha256": sha256, "filename": filename})
    return client.post("/api/v1/uploads/", HTTP_UPLOAD_LENGTH=str(length), HTTP_UPLOAD_METADATA=meta, **TUS)


def upload_calibration(client, data: bytes, *, scanner, chunk: int = 256 * 1024):
    """Create a calibration upload and send every byte; returns (upload id, last PATCH response)."""
    created = create_calibration(client, length=len(data), scanner=scanner, sha256=sha256_hex(data))
    assert created.status_code == 201, created.content
    url = created["Location"]
    response = None
    for offset in range(0, len(data), chunk):
        response = patch(client, url, offset=offset, data=data[offset : offset + chunk])
        assert response.status_code == 204, response.content
    return url.rstrip("/").rsplit("/", 1)[-1], response
