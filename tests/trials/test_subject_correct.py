"""subject_correct: the enrolment date is correctable with a reason, audited with old
and new values; the code, site and status are not; every refusal writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from compliance.signatures import signature_apply
from config.api_errors import status_for
from tests import factories as f
from tests.trials.corrections import head_sequence, one_event_since, refused
from trials.services.subjects import subject_correct


@pytest.fixture
def subject(site_a):
    return f.SubjectFactory(site=site_a, enrolment_date=dt.date(2026, 1, 12))


def _correct(actor, subject, reason="date transposed on the CRF", **fields):
    return subject_correct(actor=actor, subject=subject, reason=reason, **fields)


def test_it_corrects_the_enrolment_date_with_one_audit_event(subject, coordinator_a):
    start = head_sequence()
    _correct(coordinator_a, subject, enrolment_date=dt.date(2026, 1, 21))

    subject.refresh_from_db()
    assert subject.enrolment_date == dt.date(2026, 1, 21)
    event = one_event_since(start)
    assert (event.action, event.actor, event.site_id, event.subject_id, event.object_id) == (
        AuditAction.SUBJECT_UPDATED,
        coordinator_a,
        subject.site_id,
        subject.pk,
        str(subject.pk),
    )
    assert event.changes == {"enrolment_date": ["2026-01-12", "2026-01-21"]}
    assert event.reason == "date transposed on the CRF"


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_it_requires_a_reason(subject, coordinator_a, nothing_written, reason):
    error = refused(
        "reason_required",
        nothing_written,
        _correct,
        subject,
        actor=coordinator_a,
        subject=subject,
        reason=reason,
        enrolment_date=dt.date(2026, 1, 21),
    )
    assert (error.field, status_for(error.code)) == ("reason", 400)


@pytest.mark.parametrize("fields", [{}, {"enrolment_date": dt.date(2026, 1, 12)}], ids=["empty", "same value"])
def test_it_refuses_a_correction_that_changes_nothing(subject, coordinator_a, nothing_written, fields):
    refused("no_change", nothing_written, _correct, subject, actor=coordinator_a, subject=subject, **fields)


@pytest.mark.parametrize(
    "field,value,code",
    [
        ("code", "MPI-CT-T01-A-0099", "code_not_correctable"),
        ("site", None, "site_not_correctable"),
        ("trial", None, "trial_not_correctable"),
        ("status", "withdrawn", "status_not_correctable"),
        ("id", 999, "id_not_correctable"),
        ("shoe_size", 44, "unknown_field"),
    ],
)
def test_it_refuses_fields_that_may_not_be_corrected(subject, coordinator_a, nothing_written, field, value, code):
    error = refused(code, nothing_written, _correct, subject, actor=coordinator_a, subject=subject, **{field: value})
    assert (error.field, status_for(error.code)) == (field, 400)


def test_it_refuses_an_enrolment_date_in_the_future(subject, coordinator_a, nothing_written):
    tomorrow = timezone.localdate() + dt.timedelta(days=2)
    refused(
        "enrolment_date_in_future",
        nothing_written,
        _correct,
        subject,
        actor=coordinator_a,
        subject=subject,
        enrolment_date=tomorrow,
    )


@pytest.mark.parametrize("who", ["imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor"])
def test_it_lets_only_a_coordinator_of_the_site_correct(request, subject, nothing_written, who):
    actor = request.getfixturevalue(who)
    error = refused(
        "forbidden",
        nothing_written,
        _correct,
        subject,
        actor=actor,
        subject=subject,
        enrolment_date=dt.date(2026, 1, 21),
    )
    assert status_for(error.code) == 403


def test_it_invalidates_the_signature_of_a_signed_visit(subject, coordinator_a, investigator_a):
    signature = signature_apply(signer=investigator_a, password=f.PASSWORD, obj=subject, meaning="approval")
    start = head_sequence()
    _correct(coordinator_a, subject, enrolment_date=dt.date(2026, 1, 21))

    signature = Signature.objects.get(pk=signature.pk)
    assert not signature.valid
    assert "date transposed on the CRF" in signature.invalidation_reason
    actions = [e.action for e in AuditEvent.objects.filter(sequence__gt=start).order_by("sequence")]
    assert actions == [AuditAction.SUBJECT_UPDATED, AuditAction.SIGNATURE_INVALIDATED]


# --------------------------------------------------------------------------- API


def _url(subject):
    return reverse("subject-detail", kwargs={"pk": subject.pk})


def test_it_corrects_through_the_api(api, subject, coordinator_a):
    response = api(coordinator_a).patch(
        _url(subject), {"enrolment_date": "2026-01-21", "reason": "CRF typo at visit 2"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["enrolment_date"] == "2026-01-21"
    assert "signatures" in response.json()
    subject.refresh_from_db()
    assert subject.enrolment_date == dt.date(2026, 1, 21)


def test_it_names_a_field_that_cannot_be_corrected_through_the_api(api, subject, coordinator_a, nothing_written):
    with nothing_written():
        response = api(coordinator_a).patch(
            _url(subject), {"code": "X-1", "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "code_not_correctable"
    assert response.json()["error"]["fields"] == {"code": [response.json()["error"]["message"]]}


def test_it_asks_for_a_reason_through_the_api(api, subject, coordinator_a, nothing_written):
    with nothing_written():
        response = api(coordinator_a).patch(_url(subject), {"enrolment_date": "2026-01-21"}, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "reason_required")


# The subject has no data-sharing consent, so it is outside the sponsor's view: 404.
@pytest.mark.parametrize("who,status", [("coordinator_b", 404), ("monitor", 403), ("sponsor", 404)])
def test_it_validates_ownership(request, api, subject, nothing_written, who, status):
    client = api(request.getfixturevalue(who))
    with nothing_written():
        response = client.patch(
            _url(subject), {"enrolment_date": "2026-01-21", "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert response.status_code == status
    assert response.json()["error"]["code"] == {404: "not_found", 403: "forbidden"}[status]
    subject.refresh_from_db()
    assert subject.enrolment_date == dt.date(2026, 1, 12)
