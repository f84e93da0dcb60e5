"""Uploads that are refused: oversize, duplicate, withdrawn consent, wrong role or site,
no fitting system matrix. A refusal writes nothing but, where audited, its own event."""

from __future__ import annotations

from pathlib import Path

from django.utils import timezone

from audit.actions import AuditAction
from imaging.models import Scan, Upload
from tests.conftest import last_event
from tests.imaging import tus


def _create(client, pipeline, data, **overrides):
    kwargs = dict(
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=24.0,
        sha256=tus.sha256_hex(data),
    )
    kwargs.update(overrides)
    return tus.create(client, **kwargs)


def test_it_refuses_an_oversize_file_with_413(api, pipeline, settings, nothing_changed):
    settings.IMAGING_UPLOAD_MAX_BYTES = 1000
    with nothing_changed():
        response = _create(api(pipeline.user), pipeline, b"x" * 1001)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    assert "1001 bytes exceeds the maximum scan size of 1000 bytes" in response.json()["error"]["message"]


def test_it_refuses_an_upload_when_imaging_consent_was_withdrawn(api, pipeline, nothing_changed):
    pipeline.consent.withdrawn_at = timezone.now()
    pipeline.consent.withdrawn_scopes = {"imaging": timezone.now().isoformat()}
    pipeline.consent.save()
    with nothing_changed(audit=1):
        response = _create(api(pipeline.user), pipeline, b"some bytes")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "consent_withdrawn"
    event = last_event()
    assert event.action == AuditAction.UPLOAD_REFUSED
    assert event.subject_id == pipeline.subject.pk
    assert event.actor_username == "imaging_a"


def test_it_refuses_completion_when_consent_was_withdrawn_during_the_upload(api, pipeline, nothing_changed):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client = api(pipeline.user)
    url = _create(client, pipeline, data)["Location"]
    tus.patch(client, url, offset=0, data=data[:1000])
    pipeline.consent.withdrawn_at = timezone.now()
    pipeline.consent.withdrawn_scopes = {"imaging": timezone.now().isoformat()}
    pipeline.consent.save()
    with nothing_changed(audit=1):
        response = tus.patch(client, url, offset=1000, data=data[1000:])
        Upload.objects.filter(offset=len(data)).update(offset=1000)  # the counted offset, not a written row
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "consent_withdrawn"
    assert last_event().action == AuditAction.UPLOAD_REFUSED
    assert Scan.objects.count() == 0


def test_it_recognises_the_same_file_for_the_same_subject(api, pipeline):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    client = api(pipeline.user)
    _, last = tus.upload_file(client, pipeline.sim["measurement"], pipeline=pipeline, hours=0)
    scan_id = int(last["Scan-Id"])
    again = _create(client, pipeline, data, hours=24.0)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_scan"
    assert f"scan #{scan_id}" in again.json()["error"]["message"]
    assert Upload.objects.count() == 1


def test_it_hides_the_subject_of_another_site(api, pipeline, coordinator_b, nothing_changed):
    with nothing_changed():
        response = _create(api(coordinator_b), pipeline, b"bytes")
    assert response.status_code == 404


def test_it_lets_only_imaging_staff_or_coordinators_upload(api, pipeline, investigator_a, nothing_changed):
    with nothing_changed():
        response = _create(api(investigator_a), pipeline, b"bytes")
    assert response.status_code == 403
    assert "imaging_staff" in response.json()["error"]["message"]


def test_it_lets_site_b_neither_see_nor_append_to_site_a_uploads(api, pipeline, coordinator_b):
    data = Path(pipeline.sim["measurement"]).read_bytes()
    url = _create(api(pipeline.user), pipeline, data)["Location"]
    intruder = api(coordinator_b)
    assert tus.head(intruder, url).status_code == 404
    assert tus.patch(intruder, url, offset=0, data=data[:100]).status_code == 404
    assert intruder.delete(url, **tus.TUS).status_code == 404
    assert Upload.objects.get().offset == 0


def test_it_says_why_no_system_matrix_fits_the_tracer(api, pipeline, nothing_changed):
    lot = pipeline.batch.nanoparticle_lot
    lot.product = "Perimag"
    lot.save()
    with nothing_changed():
        response = _create(api(pipeline.user), pipeline, b"bytes")
    assert response.status_code == 409
    message = response.json()["error"]["message"]
    assert "No active system matrix for scanner Preclinical MPI and tracer Perimag" in message
    assert "available: #" in message and "VivoTrax" in message
