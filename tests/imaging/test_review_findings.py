"""Defects found in the security review of the scan pipeline, each with its proof.

- Withdrawal stops processing for the withdrawn scope (DOMAIN §4): reconstruction and
  quantification went on after imaging consent was withdrawn (only validation checked).
- Two PATCHes on one upload at the same offset: the loser's bytes overwrote the
  winner's accepted chunk on disk (the conditional offset update only protected the row).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.errors import RuleViolation
from imaging import uploads
from imaging.cache import SystemMatrixCache
from imaging.models import Measurement, Reconstruction, Upload
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate
from imaging.services.scan_uploads import upload_append
from tests.imaging import tus
from tests.imaging.helpers import uploaded_scan


def _withdraw_imaging(consent):
    now = timezone.now()
    consent.withdrawn_at = now
    consent.withdrawn_scopes = {"imaging": now.isoformat()}
    consent.save()


def test_it_stops_reconstruction_once_imaging_consent_is_withdrawn(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan_validate(scan_id=scan.pk, token="task-1")
    scan.refresh_from_db()
    assert scan.status == "validated"
    _withdraw_imaging(pipeline.consent)

    scan_reconstruct(scan_id=scan.pk, token="task-2", cache=SystemMatrixCache(10**9))

    scan.refresh_from_db()
    assert scan.status == "failed" and not scan.retryable
    assert "withdrew imaging consent" in scan.status_reason
    assert not Reconstruction.objects.filter(scan=scan).exists()
    assert not any(Path(uploads.media_path("imaging/scans")).rglob("*reconstruction*"))
    assert Path(uploads.media_path(scan.file)).exists()  # the data already collected is kept
    last = AuditEvent.objects.filter(object_id=str(scan.pk), action=AuditAction.SCAN_STATUS_CHANGED).last()
    assert last.changes["status"] == ["reconstructing", "failed"]


def test_it_stops_quantification_once_imaging_consent_is_withdrawn(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    scan_validate(scan_id=scan.pk, token="task-1")
    scan_reconstruct(scan_id=scan.pk, token="task-1", cache=SystemMatrixCache(10**9))
    _withdraw_imaging(pipeline.consent)

    scan_quantify(scan_id=scan.pk, token="task-1")

    scan.refresh_from_db()
    assert scan.status == "failed" and not scan.retryable
    assert "withdrew imaging consent" in scan.status_reason
    assert not Measurement.objects.filter(scan=scan).exists()


def test_it_never_lets_a_losing_concurrent_patch_overwrite_the_accepted_chunk(api, pipeline):
    """PATCH 1 is still streaming its body when PATCH 2 at the same offset arrives.
    Exactly one may write; the file must hold exactly the bytes the server accepted."""
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client = api(pipeline.user)
    created = tus.create(
        client,
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=24.0,
        sha256=tus.sha256_hex(data),
    )
    upload = Upload.objects.get()
    first, second = data[:1000], bytes(1000)  # same offset, different bytes
    outcomes = {}

    def body_of(chunk):
        state = {"sent": False}

        def readinto(buffer):
            if state["sent"]:
                return 0
            state["sent"] = True
            buffer[: len(chunk)] = chunk
            return len(chunk)

        return readinto

    def slow_readinto(buffer):
        # While PATCH 1 streams, PATCH 2 arrives (it saw the same offset 0).
        if "second" not in outcomes:
            stale = Upload.objects.get(pk=upload.pk)
            try:
                outcomes["second"] = upload_append(
                    actor=pipeline.user,
                    upload=stale,
                    offset=0,
                    source=SimpleNamespace(readinto=body_of(second)),
                    checksum=None,
                )
            except RuleViolation as exc:
                outcomes["second"] = exc
            buffer[: len(first)] = first
            return len(first)
        return 0

    try:
        outcomes["first"] = upload_append(
            actor=pipeline.user,
            upload=Upload.objects.get(pk=upload.pk),
            offset=0,
            source=SimpleNamespace(readinto=slow_readinto),
            checksum=None,
        )
    except RuleViolation as exc:
        outcomes["first"] = exc

    accepted = [name for name, o in outcomes.items() if not isinstance(o, RuleViolation)]
    assert len(accepted) == 1, outcomes
    upload.refresh_from_db()
    assert upload.offset == 1000
    on_disk = Path(uploads.media_path(upload.path)).read_bytes()
    expected = first if accepted == ["first"] else second
    assert hashlib.sha256(on_disk).hexdigest() == hashlib.sha256(expected).hexdigest()
    # ... and the upload goes on from the server's offset to a valid scan.
    response = tus.patch(client, created["Location"], offset=1000, data=data[1000:])
    if expected == first:
        assert response.status_code == 204, response.content


def test_it_answers_a_filter_by_another_sites_id_as_if_the_id_did_not_exist(api, site_a, coordinator_b):
    """?scan=<id>: an id of site A and an id that exists nowhere must read the same to
    site B, or the answer (400 "not a valid choice" vs 200 empty) tells which ids exist."""
    from tests.imaging import api_objects

    class Cast:
        pass

    cast = Cast()
    cast.site_a, cast.trial = site_a, site_a.trial
    scan = api_objects._scan_a(cast)
    roi = api_objects.HIDDEN_FROM_SITE_B["roi"](cast)
    scanner = api_objects.HIDDEN_FROM_SITE_B["scanner"](cast)
    client = api(coordinator_b)
    probes = [
        ("measurements", "scan", scan.pk),
        ("rois", "scan", scan.pk),
        ("rois", "subject", roi.subject_id),
        ("alerts", "scan", scan.pk),
        ("alerts", "subject", scan.subject_id),
        ("system-matrices", "scanner", scanner.pk),
        ("scanners", "site", site_a.pk),
    ]
    for route, param, real_id in probes:
        existing = client.get(f"/api/v1/{route}/", {param: real_id})
        missing = client.get(f"/api/v1/{route}/", {param: 10**9})
        assert (existing.status_code, existing.json()) == (missing.status_code, missing.json()), (route, param)


def test_it_lets_the_site_upload_the_file_again_after_its_bytes_were_rejected(api, pipeline):
    """The rejection says "upload the file again": the same declared sha256 must then be
    accepted, not refused as a duplicate of the rejected scan."""
    data = Path(pipeline.sim["measurement"]).read_bytes()
    corrupt = data[:-1] + bytes([data[-1] ^ 0xFF])  # damaged in transit, each chunk self-consistent
    client = api(pipeline.user)
    kwargs = dict(
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=24.0,
        sha256=tus.sha256_hex(data),
    )
    first = tus.patch(client, tus.create(client, **kwargs)["Location"], offset=0, data=corrupt)
    scan_validate(scan_id=int(first["Scan-Id"]), token="t")
    rejected = pipeline.subject.scans.get(pk=first["Scan-Id"])
    assert rejected.status == "rejected" and "upload the file again" in rejected.status_reason

    again = tus.create(client, **kwargs)
    assert again.status_code == 201, again.content
    last = tus.patch(client, again["Location"], offset=0, data=data)
    assert last.status_code == 204, last.content
    scan = pipeline.subject.scans.get(pk=last["Scan-Id"])
    scan_validate(scan_id=scan.pk, token="t2")
    scan.refresh_from_db()
    assert scan.status == "validated"
    rejected.refresh_from_db()
    assert rejected.status == "rejected"  # the first record is kept as it was


def test_it_still_refuses_the_same_file_twice_while_the_first_is_not_rejected(api, pipeline):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client = api(pipeline.user)
    kwargs = dict(
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=24.0,
        sha256=tus.sha256_hex(data),
    )
    tus.patch(client, tus.create(client, **kwargs)["Location"], offset=0, data=data)
    again = tus.create(client, **kwargs)
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_scan"
