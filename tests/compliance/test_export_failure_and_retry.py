"""Issue #12 item 9: a failed export says what happened in words a person can act on
(no exception class, no server path), is audited, and can be retried by the person who
asked for it, through the API or the exports page."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance import reports
from compliance.models import Export
from compliance.services.exports import export_download, export_request, export_run
from config.errors import RuleViolation

SERVER_PATH = "/srv/platform/var/media/exports/2026/secret-tmp-file.zip"


@pytest.fixture
def broken_pdf(monkeypatch):
    """The PDF builder fails the way a full disk would; ``broken_pdf.heal()`` mends it."""

    class Broken:
        def heal(self):
            monkeypatch.setitem(reports.BUILDERS, Export.Kind.REPORT_PDF, original)

    original = reports.BUILDERS[Export.Kind.REPORT_PDF]

    def fail(export):
        raise OSError(28, "No space left on device", SERVER_PATH)

    monkeypatch.setitem(reports.BUILDERS, Export.Kind.REPORT_PDF, (fail, *original[1:]))
    return Broken()


@pytest.fixture
def failed(broken_pdf, auditor, trial, visit):
    export = export_request(actor=auditor, kind=Export.Kind.REPORT_PDF, trial=trial)
    export = export_run(export.pk)
    assert export.status == Export.Status.FAILED
    return export


def _events(action, export):
    return AuditEvent.objects.filter(action=action, object_type="compliance.export", object_id=str(export.pk))


def test_it_records_a_readable_message_and_audits_the_failure(failed):
    assert "could not be built" in failed.error and "retry" in failed.error.lower()
    assert f"export-{failed.pk}" in failed.error  # the reference to find it in the server log
    for internal in ("/srv", "secret-tmp-file", "OSError", "Errno", "Traceback", "No space left"):
        assert internal not in failed.error, internal
    assert failed.file == "" and failed.sha256 == "" and failed.finished_at is not None
    [event] = _events(AuditAction.EXPORT_COMPLETED, failed)
    assert event.changes["status"] == "failed" and event.changes["message"] == failed.error
    assert "/srv" not in str(event.changes)


def test_it_shows_a_refusal_by_a_rule_as_its_own_message(monkeypatch, auditor, trial, visit):
    def refuse(export):
        raise RuleViolation("scan_not_quantified", "Scan #7 is failed: only a reconstructed scan can be exported.")

    monkeypatch.setitem(reports.BUILDERS, Export.Kind.AUDIT_JSON, (refuse, "json", "application/json"))
    export = export_run(export_request(actor=auditor, kind=Export.Kind.AUDIT_JSON, trial=trial).pk)
    assert export.status == Export.Status.FAILED
    assert export.error == "Scan #7 is failed: only a reconstructed scan can be exported."


def test_it_shows_the_message_on_the_exports_page_with_a_retry_button(client, failed, auditor):
    client.force_login(auditor)
    html = client.get("/exports/").content.decode()
    assert "could not be built" in html and "/srv" not in html
    assert f'action="/exports/{failed.pk}/retry/"' in html


def test_it_retries_a_failed_export_through_the_api_and_then_builds_it(api, failed, broken_pdf, auditor):
    broken_pdf.heal()
    response = api(auditor).post(f"/api/v1/exports/{failed.pk}/retry/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["error"] == "" and body["id"] == failed.pk
    [event] = _events(AuditAction.EXPORT_RETRIED, failed)
    assert event.actor == auditor and event.changes["status"] == ["failed", "queued"]

    export = export_run(failed.pk)
    assert export.status == Export.Status.READY and export.error == "" and export.sha256
    with export_download(actor=auditor, export=export) as handle:
        assert handle.read().startswith(b"%PDF")


def test_it_retries_a_failed_export_from_the_exports_page(client, failed, broken_pdf, auditor):
    broken_pdf.heal()
    client.force_login(auditor)
    response = client.post(f"/exports/{failed.pk}/retry/")
    assert response.status_code == 302 and response.url == "/exports/"
    failed.refresh_from_db()
    assert failed.status == Export.Status.QUEUED and failed.error == ""
    assert _events(AuditAction.EXPORT_RETRIED, failed).count() == 1
    assert export_run(failed.pk).status == Export.Status.READY


def test_it_refuses_to_retry_an_export_that_did_not_fail(api, built, auditor, trial, visit):
    export, _ = built(auditor, Export.Kind.AUDIT_JSON, trial)
    response = api(auditor).post(f"/api/v1/exports/{export.pk}/retry/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_retryable"
    export.refresh_from_db()
    assert export.status == Export.Status.READY
    assert not _events(AuditAction.EXPORT_RETRIED, export).exists()


def test_it_lets_only_the_requester_retry(api, failed, monitor, coordinator_b):
    # The monitor sees every export of the trial (oversight) but may not re-run another's.
    refused = api(monitor).post(f"/api/v1/exports/{failed.pk}/retry/")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    # Someone of another site does not even learn that it exists.
    hidden = api(coordinator_b).post(f"/api/v1/exports/{failed.pk}/retry/")
    assert hidden.status_code == 404
    failed.refresh_from_db()
    assert failed.status == Export.Status.FAILED
    assert not _events(AuditAction.EXPORT_RETRIED, failed).exists()


def test_it_checks_the_request_rules_again_on_retry(api, failed, auditor):
    from trials.models import Membership

    Membership.objects.filter(user=auditor).delete()  # the auditor's role has ended since
    response = api(auditor).post(f"/api/v1/exports/{failed.pk}/retry/")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    failed.refresh_from_db()
    assert failed.status == Export.Status.FAILED
    assert not _events(AuditAction.EXPORT_RETRIED, failed).exists()


def test_a_sponsors_retried_export_answers_in_the_sponsors_shape(api, sponsor, trial, visit, monkeypatch):
    # The retry answers like the list and the detail: a sponsor never gets the identified shape.
    original = reports.BUILDERS[Export.Kind.SPONSOR_DEIDENTIFIED]

    def fail(export):
        raise OSError(28, "No space left on device", SERVER_PATH)

    monkeypatch.setitem(reports.BUILDERS, Export.Kind.SPONSOR_DEIDENTIFIED, (fail, *original[1:]))
    export = export_request(actor=sponsor, kind=Export.Kind.SPONSOR_DEIDENTIFIED, trial=trial)
    assert export_run(export.pk).status == Export.Status.FAILED

    response = api(sponsor).post(f"/api/v1/exports/{export.pk}/retry/")
    assert response.status_code == 202, response.content
    body = response.json()
    detail = api(sponsor).get(f"/api/v1/exports/{export.pk}/").json()
    assert set(body) == set(detail)
    assert "site" not in body and body["status"] == "queued"  # the identified shape names the site
