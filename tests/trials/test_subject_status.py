from __future__ import annotations

import pytest

from audit.actions import AuditAction
from config.api_errors import status_for
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import Subject
from trials.services.subjects import subject_change_status


def test_it_changes_the_status_with_reason_old_and_new_value(site_a, coordinator_a):
    subject = f.SubjectFactory(site=site_a, status=Subject.Status.SCREENING)
    subject_change_status(actor=coordinator_a, subject=subject, status="enrolled", reason="eligibility confirmed")

    subject.refresh_from_db()
    assert subject.status == "enrolled"
    event = last_event()
    assert (event.action, event.actor, event.site_id, event.subject_id) == (
        AuditAction.SUBJECT_STATUS_CHANGED,
        coordinator_a,
        site_a.pk,
        subject.pk,
    )
    assert event.changes == {"status": ["screening", "enrolled"]}
    assert event.reason == "eligibility confirmed"


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_it_requires_a_reason(site_a, coordinator_a, nothing_written, reason):
    subject = f.SubjectFactory(site=site_a, status=Subject.Status.SCREENING)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_change_status(actor=coordinator_a, subject=subject, status="enrolled", reason=reason)
    assert (caught.value.code, caught.value.field, status_for(caught.value.code)) == ("reason_required", "reason", 400)


def test_it_keeps_a_final_status_final(site_a, coordinator_a, nothing_written):
    subject = f.SubjectFactory(site=site_a, status=Subject.Status.WITHDRAWN)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_change_status(
            actor=coordinator_a, subject=subject, status="enrolled", reason="typo on the CRF, source checked"
        )
    assert caught.value.code == "subject_status_final"


def test_it_refuses_a_coordinator_of_another_site(site_a, coordinator_b, nothing_written):
    subject = f.SubjectFactory(site=site_a, status=Subject.Status.SCREENING)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_change_status(
            actor=coordinator_b, subject=subject, status="enrolled", reason="Subject eligible after screening"
        )
    assert caught.value.code == "forbidden"
