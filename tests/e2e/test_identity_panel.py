"""In the browser: a coordinator reveals a subject's identity on the subject page and
corrects it with a reason; each reading is on the audit trail; imaging staff see no
panel. And the upload panel says a scan's status once (issue #18, items 5 and 6)."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from trials.models import SubjectIdentity

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _reads(subject):
    return list(AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ, subject_id=subject.pk).order_by("sequence"))


def test_a_coordinator_reveals_and_corrects_the_identity(browse, ready, coordinator_a, imaging_a):
    subject, _, _ = ready
    s = browse(coordinator_a)
    page = s.page
    s.go(f"/subjects/{subject.pk}/")
    panel = page.locator("section.identity-panel")
    assert "Erika Mustermann" not in page.content() and panel.is_visible()
    assert _reads(subject) == []
    s.shot("identity-01-subject-panel")

    page.get_by_role("button", name="Show identity or correct it").click()
    values = page.locator("#identity-values")
    assert "Erika Mustermann" in values.inner_text() and "MRN0042137" in values.inner_text()
    [read] = _reads(subject)
    assert read.actor == coordinator_a
    s.shot("identity-02-revealed")

    # Without a reason the correction is refused next to the field, nothing written.
    page.get_by_label("Full name").fill("Erika Musterfrau")
    page.get_by_role("button", name="Save identity").click()
    assert "reason" in page.locator("#id_reason_error").inner_text().lower()
    assert SubjectIdentity.objects.get(subject=subject).full_name == "Erika Mustermann"
    s.shot("identity-03-reason-required")

    page.get_by_label("Full name").fill("Erika Musterfrau")
    page.get_by_label("Reason").fill("surname misspelt at enrolment, checked against the ID card")
    page.get_by_role("button", name="Save identity").click()
    page.wait_for_url(f"**/subjects/{subject.pk}/")
    assert "Identity of subject" in page.locator(".messages").inner_text()
    assert "Erika" not in page.content()  # back on the subject page: hidden again
    assert SubjectIdentity.objects.get(subject=subject).full_name == "Erika Musterfrau"
    updated = AuditEvent.objects.get(action=AuditAction.IDENTITY_UPDATED, subject_id=subject.pk)
    assert updated.actor == coordinator_a and set(updated.changes) == {"full_name"}
    assert updated.reason == "surname misspelt at enrolment, checked against the ID card"
    assert "Erika" not in str(updated.changes)

    page.get_by_role("button", name="Show identity or correct it").click()
    assert "Erika Musterfrau" in page.locator("#identity-values").inner_text()
    assert len(_reads(subject)) == 2  # each viewing on the trail

    other = browse(imaging_a)
    other.go(f"/subjects/{subject.pk}/")
    assert other.page.locator("section.identity-panel").count() == 0
    assert other.page.get_by_role("button", name="Show identity").count() == 0
    other.shot("identity-04-imaging-no-panel")
    assert len(_reads(subject)) == 2


def test_the_upload_panel_says_a_rejected_scan_is_rejected_once(browse, ready, imaging_a):
    subject, _, batch = ready
    f.InjectionFactory(batch=batch, subject=subject)
    s = browse(imaging_a)
    s.go(f"/subjects/{subject.pk}/upload/")
    s.page.evaluate(
        "window.MpiScanStatus.render({status: 'rejected', status_reason: 'No calibration matches the tracer.'})"
    )
    line = s.page.locator("#scan-status .status-line").text_content() or ""
    assert " ".join(line.split()) == "rejected"
    assert s.page.locator("#scan-reason").text_content() == "No calibration matches the tracer."
