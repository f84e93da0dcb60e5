"""Identity is PHI: written by site clinical roles, read by them and monitors only,
and every read is audited."""

from __future__ import annotations

import datetime as dt

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.api_errors import status_for
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import SubjectIdentity
from trials.services.identity import subject_identity_read, subject_identity_set

DOB = dt.date(1958, 11, 3)


@pytest.fixture
def subject(site_a):
    return f.SubjectFactory(site=site_a)


def test_it_records_identity_with_fingerprints_not_values_in_the_trail(subject, coordinator_a):
    subject_identity_set(
        actor=coordinator_a,
        subject=subject,
        full_name="Hans Beispiel",
        date_of_birth=DOB,
        medical_record_number="MRN-77123",
    )

    assert SubjectIdentity.objects.get(subject=subject).full_name == "Hans Beispiel"
    event = last_event()
    assert (event.action, event.actor, event.subject_id) == (AuditAction.IDENTITY_CREATED, coordinator_a, subject.pk)
    assert set(event.changes) == {"full_name", "date_of_birth", "medical_record_number"}
    trail = str(event.changes)
    assert "Hans" not in trail and "MRN-77123" not in trail and "1958" not in trail
    assert event.changes["full_name"][1].startswith("hmac-sha256:")


def test_it_corrects_identity_only_with_a_reason(subject, coordinator_a, nothing_written):
    subject_identity_set(
        actor=coordinator_a,
        subject=subject,
        full_name="Hans Beispiel",
        date_of_birth=DOB,
        medical_record_number="MRN-77123",
    )
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_identity_set(
            actor=coordinator_a,
            subject=subject,
            full_name="Hans Beispiel-Muster",
            date_of_birth=DOB,
            medical_record_number="MRN-77123",
        )
    assert caught.value.code == "reason_required"

    subject_identity_set(
        actor=coordinator_a,
        subject=subject,
        full_name="Hans Beispiel-Muster",
        date_of_birth=DOB,
        medical_record_number="MRN-77123",
        reason="name changed at marriage",
    )
    event = last_event()
    assert event.action == AuditAction.IDENTITY_UPDATED
    assert set(event.changes) == {"full_name"}  # only what changed
    assert event.changes["full_name"][0] != event.changes["full_name"][1]
    assert event.reason == "name changed at marriage"


@pytest.mark.parametrize("who", ["imaging_a", "sponsor", "monitor", "coordinator_b"])
def test_it_refuses_identity_writes_by_non_site_clinical_roles(request, subject, nothing_written, who):
    actor = request.getfixturevalue(who)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_identity_set(actor=actor, subject=subject, full_name="X", date_of_birth=DOB, medical_record_number="1")
    assert caught.value.code == "forbidden"


@pytest.mark.parametrize("who", ["coordinator_a", "investigator_a", "monitor"])
def test_it_lets_phi_roles_read_identity_and_audits_the_read(request, subject, who):
    reader = request.getfixturevalue(who)
    f.SubjectIdentityFactory(subject=subject)
    identity = subject_identity_read(actor=reader, subject=subject)

    assert identity.subject_id == subject.pk
    event = last_event()
    assert (event.action, event.actor, event.subject_id, event.site_id) == (
        AuditAction.IDENTITY_READ,
        reader,
        subject.pk,
        subject.site_id,
    )


@pytest.mark.parametrize("who", ["imaging_a", "sponsor", "auditor", "coordinator_b", "investigator_b"])
def test_it_refuses_identity_reads_by_other_roles_and_sites(request, subject, nothing_written, who):
    f.SubjectIdentityFactory(subject=subject)
    actor = request.getfixturevalue(who)
    events = AuditEvent.objects.count()
    with pytest.raises(RuleViolation) as caught:
        subject_identity_read(actor=actor, subject=subject)
    assert (caught.value.code, status_for(caught.value.code)) == ("forbidden", 403)
    # Nothing is read or written but the refusal itself (tests/trials/test_it_audits_refused_identity_reads.py).
    assert AuditEvent.objects.count() == events + 1 and last_event().action == AuditAction.IDENTITY_READ_REFUSED


# --- through the API


def test_it_serves_identity_to_the_site_coordinator_and_audits_it_in_the_same_request(api, subject, coordinator_a):
    f.SubjectIdentityFactory(subject=subject, full_name="Erika Beispiel")
    response = api(coordinator_a).get(f"/api/v1/subjects/{subject.pk}/identity/", HTTP_X_REQUEST_ID="req-identity-1")

    assert response.status_code == 200
    assert response.json()["full_name"] == "Erika Beispiel"
    event = AuditEvent.objects.get(action=AuditAction.IDENTITY_READ)
    assert (event.actor, event.subject_id, event.request_id) == (coordinator_a, subject.pk, "req-identity-1")


@pytest.mark.parametrize("who", ["imaging_a", "sponsor"])
def test_it_refuses_identity_over_the_api_to_imaging_staff_and_sponsor(request, api, subject, who):
    f.SubjectIdentityFactory(subject=subject)
    f.ConsentFactory(subject=subject)  # data sharing in force: the sponsor sees the subject, not the identity
    response = api(request.getfixturevalue(who)).get(f"/api/v1/subjects/{subject.pk}/identity/")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ).exists()


def test_it_records_identity_through_the_api(api, subject, coordinator_a):
    response = api(coordinator_a).put(
        f"/api/v1/subjects/{subject.pk}/identity/",
        {"full_name": "Jan Probe", "date_of_birth": "1970-01-31", "medical_record_number": "MRN-1"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert SubjectIdentity.objects.get(subject=subject).medical_record_number == "MRN-1"
    assert last_event().action == AuditAction.IDENTITY_CREATED


def test_it_refuses_a_correction_that_changes_nothing(subject, coordinator_a, nothing_written):
    values = {"full_name": "Hans Beispiel", "date_of_birth": DOB, "medical_record_number": "MRN-77123"}
    subject_identity_set(actor=coordinator_a, subject=subject, **values)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        subject_identity_set(actor=coordinator_a, subject=subject, reason="checked against the ID card", **values)
    assert (caught.value.code, status_for(caught.value.code)) == ("no_change", 400)
