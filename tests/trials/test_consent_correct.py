"""consent_correct: the signature time and (before any withdrawal) the scopes are
correctable with a reason, under the rules consent_sign enforces, and never so that an
injection already given loses the consent it was given under."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import to_jsonable
from audit.models import AuditEvent
from compliance.signatures import signature_apply
from config.api_errors import status_for
from tests import factories as f
from tests.trials.corrections import head_sequence, one_event_since, refused
from trials.services.consent import consent_correct, consent_withdraw

ALL_SCOPES = ["imaging", "longitudinal_imaging", "data_sharing"]


def _correct(actor, consent, reason="date copied from the wrong form", **fields):
    return consent_correct(actor=actor, consent=consent, reason=reason, **fields)


def _refused(code, nothing_written, actor, consent, **fields):
    return refused(code, nothing_written, _correct, consent, actor=actor, consent=consent, **fields)


def test_it_corrects_the_signature_time_with_one_audit_event(ready, coordinator_a):
    subject, consent, _ = ready
    old, new = consent.signed_at, f.days_ago(48)
    start = head_sequence()
    _correct(coordinator_a, consent, signed_at=new)

    consent.refresh_from_db()
    assert consent.signed_at == new
    event = one_event_since(start)
    assert (event.action, event.actor, event.subject_id, event.site_id, event.object_id) == (
        AuditAction.CONSENT_UPDATED,
        coordinator_a,
        subject.pk,
        subject.site_id,
        str(consent.pk),
    )
    assert event.changes == {"signed_at": [to_jsonable(old), to_jsonable(new)]}
    assert event.reason == "date copied from the wrong form"


def test_it_corrects_the_scopes_before_any_withdrawal(ready, coordinator_a):
    _, consent, _ = ready
    start = head_sequence()
    _correct(coordinator_a, consent, scopes=["imaging", "longitudinal_imaging"])
    consent.refresh_from_db()
    assert consent.scopes == ["imaging", "longitudinal_imaging"]
    assert one_event_since(start).changes == {"scope_data_sharing": [True, False]}


def test_it_refuses_scopes_once_a_withdrawal_is_recorded(ready, coordinator_a, nothing_written):
    _, consent, _ = ready
    consent_withdraw(
        actor=coordinator_a,
        consent=consent,
        scopes=["data_sharing"],
        reason="subject asked to stop sharing",
        withdrawn_at=f.days_ago(5),
    )
    _refused("scopes_locked_after_withdrawal", nothing_written, coordinator_a, consent, scopes=["imaging"])


def test_it_refuses_a_signature_time_after_the_withdrawal(ready, coordinator_a, nothing_written):
    _, consent, _ = ready
    consent_withdraw(
        actor=coordinator_a,
        consent=consent,
        scopes=["data_sharing"],
        reason="subject asked to stop sharing",
        withdrawn_at=f.days_ago(5),
    )
    _refused("signed_after_withdrawal", nothing_written, coordinator_a, consent, signed_at=f.days_ago(3))


def test_it_refuses_a_time_before_another_consents_withdrawal(ready, coordinator_a, nothing_written):
    subject, first, _ = ready
    consent_withdraw(
        actor=coordinator_a,
        consent=first,
        scopes=["data_sharing"],
        reason="subject asked to stop sharing",
        withdrawn_at=f.days_ago(20),
    )
    second = f.ConsentFactory(
        subject=subject, document=first.document, signed_at=f.days_ago(15), obtained_by=coordinator_a
    )
    _refused("signed_before_withdrawal", nothing_written, coordinator_a, second, signed_at=f.days_ago(25))


def test_it_refuses_a_time_before_the_document_took_effect(ready, coordinator_a, nothing_written):
    _, consent, _ = ready
    _refused("consent_document_not_effective", nothing_written, coordinator_a, consent, signed_at=f.days_ago(400))


def test_it_refuses_a_time_when_a_newer_version_was_in_force(ready, trial, coordinator_a, nothing_written):
    _, consent, _ = ready
    today = timezone.localdate()
    f.ConsentDocumentFactory(
        trial=trial, irb_approval_date=today - dt.timedelta(days=40), effective_date=today - dt.timedelta(days=30)
    )
    _refused("consent_document_superseded", nothing_written, coordinator_a, consent, signed_at=f.days_ago(20))


def test_it_refuses_a_time_in_the_future(ready, coordinator_a, nothing_written):
    _, consent, _ = ready
    _refused(
        "signed_at_in_future", nothing_written, coordinator_a, consent, signed_at=timezone.now() + dt.timedelta(hours=1)
    )


def test_it_refuses_a_time_that_leaves_an_injection_without_consent(
    ready, coordinator_a, investigator_a, nothing_written
):
    subject, consent, batch = ready
    f.InjectionFactory(
        batch=batch,
        subject=subject,
        administered_at=f.days_ago(10),
        administered_by=investigator_a,
        verified_by=coordinator_a,
    )
    error = _refused(
        "consent_correction_uncovers_injection", nothing_written, coordinator_a, consent, signed_at=f.days_ago(8)
    )
    assert error.field == "signed_at"


def test_it_refuses_dropping_imaging_after_an_injection(ready, coordinator_a, investigator_a, nothing_written):
    subject, consent, batch = ready
    f.InjectionFactory(batch=batch, subject=subject, administered_by=investigator_a, verified_by=coordinator_a)
    _refused("consent_correction_uncovers_injection", nothing_written, coordinator_a, consent, scopes=["data_sharing"])


@pytest.mark.parametrize("scopes", [[], ["telepathy"]])
def test_it_refuses_invalid_scopes(ready, coordinator_a, nothing_written, scopes):
    _, consent, _ = ready
    _refused("invalid_scope", nothing_written, coordinator_a, consent, scopes=scopes)


@pytest.mark.parametrize(
    "field", ["document", "subject", "obtained_by", "withdrawn_at", "withdrawn_scopes", "withdrawal_reason", "id"]
)
def test_it_refuses_fields_that_may_not_be_corrected(ready, coordinator_a, nothing_written, field):
    _, consent, _ = ready
    _refused(f"{field}_not_correctable", nothing_written, coordinator_a, consent, **{field: None})


@pytest.mark.parametrize("reason", ["", None])
def test_it_requires_a_reason(ready, coordinator_a, nothing_written, reason):
    _, consent, _ = ready
    _refused("reason_required", nothing_written, coordinator_a, consent, reason=reason, scopes=["imaging"])


def test_it_refuses_a_correction_that_changes_nothing(ready, coordinator_a, nothing_written):
    _, consent, _ = ready
    _refused("no_change", nothing_written, coordinator_a, consent, scopes=ALL_SCOPES, signed_at=consent.signed_at)


@pytest.mark.parametrize("who", ["imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor"])
def test_it_lets_only_a_coordinator_of_the_site_correct(request, ready, nothing_written, who):
    _, consent, _ = ready
    error = _refused("forbidden", nothing_written, request.getfixturevalue(who), consent, scopes=["imaging"])
    assert status_for(error.code) == 403


def test_it_invalidates_the_signature_of_a_signed_visit(ready, coordinator_a, investigator_a):
    subject, consent, _ = ready
    signature = signature_apply(signer=investigator_a, password=f.PASSWORD, obj=subject, meaning="approval")
    start = head_sequence()
    _correct(coordinator_a, consent, signed_at=f.days_ago(49))

    signature.refresh_from_db()
    assert not signature.valid
    assert [e.action for e in AuditEvent.objects.filter(sequence__gt=start).order_by("sequence")] == [
        AuditAction.CONSENT_UPDATED,
        AuditAction.SIGNATURE_INVALIDATED,
    ]


# --------------------------------------------------------------------------- API


def _url(consent):
    return reverse("consent-detail", kwargs={"pk": consent.pk})


def test_it_corrects_through_the_api(api, ready, coordinator_a):
    _, consent, _ = ready
    response = api(coordinator_a).patch(
        _url(consent), {"scopes": ["imaging"], "reason": "wrong boxes ticked"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["scopes"] == ["imaging"]


@pytest.mark.parametrize("who,status", [("coordinator_b", 404), ("monitor", 403), ("sponsor", 403)])
def test_it_validates_ownership(request, api, ready, nothing_written, who, status):
    _, consent, _ = ready
    client = api(request.getfixturevalue(who))
    with nothing_written():
        response = client.patch(
            _url(consent), {"scopes": ["imaging"], "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert response.status_code == status
    consent.refresh_from_db()
    assert consent.scopes == ALL_SCOPES
