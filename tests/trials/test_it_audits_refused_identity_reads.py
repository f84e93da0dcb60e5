"""A refused attempt to read a subject's identity is as much a fact for the access log
as an allowed read (HIPAA 164.312(b)): the wrong role, another site, or a subject the
reader cannot see leaves an IDENTITY_READ_REFUSED event, written where allowed reads
are audited (trials.services.subject_identity_read), and reveals nothing."""

from __future__ import annotations

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.api_errors import status_for
from config.errors import RuleViolation
from tests import factories as f
from tests.conftest import last_event
from trials.models import Subject, SubjectIdentity
from trials.services.identity import subject_identity_read


@pytest.fixture
def subject(site_a):
    subject = f.SubjectFactory(site=site_a)
    f.SubjectIdentityFactory(subject=subject, full_name="Erika Beispiel", medical_record_number="MRN-0815")
    return subject


def _refusals():
    return list(AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ_REFUSED).order_by("sequence"))


@pytest.mark.parametrize("who", ["imaging_a", "sponsor", "auditor", "coordinator_b", "investigator_b"])
def test_the_service_audits_a_refused_read(request, subject, who):
    reader = request.getfixturevalue(who)
    counts = (Subject.objects.count(), SubjectIdentity.objects.count())
    with pytest.raises(RuleViolation) as caught:
        subject_identity_read(actor=reader, subject=subject)
    assert (caught.value.code, status_for(caught.value.code)) == ("forbidden", 403)
    event = last_event()
    assert (event.action, event.actor, event.object_type, event.object_id, event.subject_id, event.site_id) == (
        AuditAction.IDENTITY_READ_REFUSED,
        reader,
        "trials.subjectidentity",
        str(subject.pk),
        subject.pk,
        subject.site_id,
    )
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ).exists()
    assert (Subject.objects.count(), SubjectIdentity.objects.count()) == counts


@pytest.mark.parametrize("who", ["imaging_a"])
def test_the_api_audits_a_wrong_role_refusal_in_the_same_request(request, api, subject, who):
    reader = request.getfixturevalue(who)
    response = api(reader).get(f"/api/v1/subjects/{subject.pk}/identity/", HTTP_X_REQUEST_ID="req-refused-1")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    [event] = _refusals()
    assert (event.actor, event.subject_id, event.request_id) == (reader, subject.pk, "req-refused-1")
    trail = f"{event.changes} {event.reason}"
    assert "Erika" not in trail and "MRN-0815" not in trail


def test_the_api_audits_the_sponsors_attempt_and_answers_404(api, subject, sponsor):
    # The sponsor reads only de-identified data: the identity route is not there for them (404), and
    # the attempt is on the trail like any other refused read.
    response = api(sponsor).get(f"/api/v1/subjects/{subject.pk}/identity/", HTTP_X_REQUEST_ID="req-refused-2")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    [event] = _refusals()
    assert (event.actor, event.object_id, event.request_id) == (sponsor, str(subject.pk), "req-refused-2")
    trail = f"{event.changes} {event.reason}"
    assert "Erika" not in trail and "MRN-0815" not in trail


def test_the_api_audits_another_sites_attempt_and_still_answers_404(api, subject, coordinator_b):
    response = api(coordinator_b).get(f"/api/v1/subjects/{subject.pk}/identity/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    [event] = _refusals()
    assert (event.actor, event.object_id) == (coordinator_b, str(subject.pk))
    assert event.changes["why"] == "not visible to the reader"


def test_the_api_audits_a_probe_for_a_subject_that_does_not_exist(api, subject, coordinator_b):
    for pk in ("999999", "not-a-number"):
        response = api(coordinator_b).get(f"/api/v1/subjects/{pk}/identity/")
        assert response.status_code == 404
    assert [e.object_id for e in _refusals()] == ["999999", "not-a-number"]


def test_an_allowed_read_is_not_counted_as_refused(api, subject, coordinator_a):
    assert api(coordinator_a).get(f"/api/v1/subjects/{subject.pk}/identity/").status_code == 200
    assert _refusals() == []
