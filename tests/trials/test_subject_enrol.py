from __future__ import annotations

import datetime as dt

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.api_errors import status_for
from config.errors import RuleViolation
from tests.conftest import last_event
from trials.models import Subject
from trials.services.subjects import subject_enrol

TODAY = dt.date(2026, 3, 2)


def test_it_enrols_a_subject_with_a_generated_code_and_one_audit_event(site_a, coordinator_a):
    subject = subject_enrol(actor=coordinator_a, site=site_a, enrolment_date=TODAY)

    assert subject.code == "MPI-CT-T01-A-0001"
    assert (subject.trial, subject.site, subject.status) == (site_a.trial, site_a, Subject.Status.SCREENING)
    assert AuditEvent.objects.count() == 1
    event = last_event()
    assert (event.action, event.actor, event.site_id, event.subject_id) == (
        AuditAction.SUBJECT_ENROLLED,
        coordinator_a,
        site_a.pk,
        subject.pk,
    )
    assert event.changes["code"] == [None, "MPI-CT-T01-A-0001"]
    assert event.changes["enrolment_date"] == [None, "2026-03-02"]


def test_it_numbers_subjects_per_site(site_a, site_b, coordinator_a, coordinator_b):
    codes = [
        subject_enrol(actor=coordinator_a, site=site_a, enrolment_date=TODAY).code,
        subject_enrol(actor=coordinator_a, site=site_a, enrolment_date=TODAY).code,
        subject_enrol(actor=coordinator_b, site=site_b, enrolment_date=TODAY).code,
    ]
    assert codes == ["MPI-CT-T01-A-0001", "MPI-CT-T01-A-0002", "MPI-CT-T01-B-0001"]


@pytest.mark.parametrize("who", ["imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor", "auditor"])
def test_it_refuses_anyone_but_a_coordinator_at_the_site(request, site_a, nothing_written, who):
    actor = request.getfixturevalue(who)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_enrol(actor=actor, site=site_a, enrolment_date=TODAY)
    assert (caught.value.code, status_for(caught.value.code)) == ("forbidden", 403)


def test_it_refuses_to_enrol_straight_into_a_final_status(site_a, coordinator_a, nothing_written):
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_enrol(actor=coordinator_a, site=site_a, enrolment_date=TODAY, status=Subject.Status.COMPLETED)
    assert caught.value.code == "invalid_initial_status"
