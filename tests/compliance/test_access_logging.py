from __future__ import annotations

import pytest

from audit.access import log_download
from audit.actions import AuditAction
from audit.context import request_context
from audit.models import AuditEvent
from compliance.models import SCAN_EXPORT_KINDS, Export
from compliance.services.exports import export_request, export_run


def test_it_audits_every_read_of_identifiable_data(api, ready, monitor):
    subject = ready[0]
    client = api(monitor)
    for _ in range(2):
        assert client.get(f"/api/v1/subjects/{subject.pk}/identity/").status_code == 200
    events = AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ)
    assert events.count() == 2
    assert {(e.actor_id, e.subject_id) for e in events} == {(monitor.pk, subject.pk)}
    assert all(e.client_address == "127.0.0.1" and e.request_id for e in events)


def test_it_audits_every_export_request_completion_and_download(api, auditor, trial, visit):
    client = api(auditor)
    # Trial-scoped kinds; the DICOM kinds (scope: one scan) are in tests/imaging/test_dicom_export_api.py.
    kinds = [k for k in Export.Kind.values if k not in SCAN_EXPORT_KINDS]
    for kind in kinds:
        response = client.post("/api/v1/exports/", {"kind": kind, "trial": trial.pk})
        assert response.status_code == 201, response.json()
        export_run(response.json()["id"])
        download = client.get(f"/api/v1/exports/{response.json()['id']}/download/")
        assert download.status_code == 200
        body = b"".join(download.streaming_content)
        export = Export.objects.get(pk=response.json()["id"])
        assert download["X-Content-SHA256"] == export.sha256 and len(body) == export.size_bytes
    for action in (AuditAction.EXPORT_REQUESTED, AuditAction.EXPORT_COMPLETED, AuditAction.EXPORT_DOWNLOADED):
        events = AuditEvent.objects.filter(action=action)
        assert events.count() == len(kinds), action
        assert {e.actor_id for e in events} == {auditor.pk}
    assert {e.changes["kind"] for e in AuditEvent.objects.filter(action=AuditAction.EXPORT_DOWNLOADED)} == set(kinds)


def test_it_validates_ownership_of_an_export(api, auditor, monitor, coordinator_b, trial, visit):
    export = export_request(actor=auditor, kind=Export.Kind.AUDIT_JSON, trial=trial)
    export_run(export.pk)
    before = AuditEvent.objects.count()
    assert api(coordinator_b).get(f"/api/v1/exports/{export.pk}/download/").status_code == 404
    assert api(coordinator_b).get(f"/api/v1/exports/{export.pk}/").status_code == 404
    # A monitor of the trial sees that the export was made, but cannot download it.
    assert api(monitor).get(f"/api/v1/exports/{export.pk}/").json()["requested_by"] == "auditor"
    refused = api(monitor).get(f"/api/v1/exports/{export.pk}/download/")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert AuditEvent.objects.count() == before


def test_it_refuses_exports_outside_the_users_scope(api, coordinator_b, imaging_a, site_a, trial, nothing_written):
    with nothing_written():
        assert (
            api(coordinator_b)
            .post("/api/v1/exports/", {"kind": "report_pdf", "trial": trial.pk, "site": site_a.pk})
            .status_code
            == 404
        )
        assert (
            api(imaging_a)
            .post("/api/v1/exports/", {"kind": "report_pdf", "trial": trial.pk, "site": site_a.pk})
            .status_code
            == 403
        )
        assert api(coordinator_b).post("/api/v1/exports/", {"kind": "audit_csv", "trial": trial.pk}).status_code == 403
    assert Export.objects.count() == 0


def test_it_answers_not_ready_without_a_download_event(api, auditor, trial):
    export = export_request(actor=auditor, kind=Export.Kind.AUDIT_CSV, trial=trial)
    response = api(auditor).get(f"/api/v1/exports/{export.pk}/download/")
    assert response.status_code == 409 and response.json()["error"]["code"] == "export_not_ready"
    assert not AuditEvent.objects.filter(action=AuditAction.EXPORT_DOWNLOADED).exists()


def test_it_logs_downloads_for_the_other_apps(visit, monitor):
    with request_context(request_id="req-1", client_address="10.1.2.3"):
        event = log_download(monitor, visit, "scan MDF", file="scan.mdf")
    assert event.action == AuditAction.FILE_DOWNLOADED and event.actor == monitor
    assert (event.trial_id, event.site_id, event.subject_id) == (visit.trial_id, visit.site_id, visit.pk)
    assert event.changes == {"what": "scan MDF", "file": "scan.mdf"}
    assert (event.client_address, event.request_id) == ("10.1.2.3", "req-1")


@pytest.mark.django_db
def test_it_builds_an_export_once_when_delivered_twice(auditor, trial):
    export = export_request(actor=auditor, kind=Export.Kind.AUDIT_JSON, trial=trial)
    assert export_run(export.pk).status == Export.Status.READY
    assert export_run(export.pk) is None
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT_COMPLETED).count() == 1
