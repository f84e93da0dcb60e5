"""A scan's rejection or failure reason is shown to site staff, returned by the API and
kept in the audit trail: it says what is wrong with the file, never where the server
keeps it. recon and h5py name the file they opened (``/srv/media/imaging/scans/....mdf:
not an HDF5 file``); the one place a scan's reason is stored (services._finish) takes the
server's paths out and keeps the MDF's own dataset paths (``/measurement/data``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import uploads
from imaging.services.scan_claims import scan_claim, scan_fail
from imaging.services.scan_steps import scan_validate
from tests.imaging.helpers import uploaded_scan


def _server_paths(settings, tmp_path) -> list[str]:
    return [
        str(settings.MEDIA_ROOT),
        str(Path(settings.MEDIA_ROOT).resolve()),
        str(tmp_path),
        str(django_settings.BASE_DIR),
    ]


def _assert_no_server_path(text: str, settings, tmp_path) -> None:
    for path in _server_paths(settings, tmp_path):
        assert path not in text, f"{path!r} in {text!r}"
    assert "/imaging/scans/" not in text and ".mdf" not in text.replace("an MDF", "")


@pytest.mark.parametrize("case", ["corrupt", "truncated"])
def test_a_rejected_upload_names_no_server_path(api, pipeline, tmp_path, settings, case):
    source = Path(pipeline.sim["measurement"])
    path = tmp_path / f"{case}.mdf"
    if case == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(source.stat().st_size))
    else:
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    scan = uploaded_scan(api, pipeline, path)

    scan_validate(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == "rejected"
    assert ("not an HDF5 file" if case == "corrupt" else "truncated") in scan.status_reason
    _assert_no_server_path(scan.status_reason, settings, tmp_path)
    _assert_no_server_path(json.dumps(scan.validation_report), settings, tmp_path)
    event = AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED).latest("sequence")
    assert event.changes["status"] == ["validating", "rejected"]
    _assert_no_server_path(event.reason, settings, tmp_path)
    body = api(pipeline.user).get(f"/api/v1/scans/{scan.pk}/").json()
    _assert_no_server_path(json.dumps([body["status_reason"], body["validation_report"]]), settings, tmp_path)
    assert "the uploaded file" in body["status_reason"]


def test_an_h5py_message_with_the_file_name_is_stored_without_it(api, pipeline, settings, tmp_path):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    stored = uploads.media_path(scan.file)
    message = (
        f"Unable to synchronously open file (unable to open file: name = '{stored}', errno = 13, "
        f"error message = 'Permission denied'); cannot read /measurement/data; see /srv/mpi/var/log/x.log"
    )
    assert scan_claim(scan_id=scan.pk, from_status="received", to_status="validating", token="t")
    assert scan_fail(scan_id=scan.pk, token="t", reason=message, retryable=True)
    scan.refresh_from_db()
    assert scan.status == "failed"
    _assert_no_server_path(scan.status_reason, settings, tmp_path)
    assert "/srv/mpi" not in scan.status_reason
    # The MDF's own dataset paths are what the site needs to fix the file: kept.
    assert "cannot read /measurement/data" in scan.status_reason
    assert "Permission denied" in scan.status_reason
    event = AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED).latest("sequence")
    assert event.reason == scan.status_reason
