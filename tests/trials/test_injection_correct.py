"""injection_correct: a dose, route, time or person recorded wrongly is corrected with a
reason, audited with old and new values, under the rules injection_record enforces."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

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
from trials.models import Injection
from trials.services.consent import consent_withdraw
from trials.services.injections import injection_correct


@pytest.fixture
def injection(ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    return f.InjectionFactory(
        batch=batch,
        subject=subject,
        administered_by=investigator_a,
        verified_by=coordinator_a,
        administered_cells=10_000_000,
        volume_ml=Decimal("2.000"),
    )


def _correct(actor, injection, reason="volume misread from the syringe label", **fields):
    return injection_correct(actor=actor, injection=injection, reason=reason, **fields)


def _refused(code, nothing_written, actor, injection, **fields):
    return refused(code, nothing_written, _correct, injection, actor=actor, injection=injection, **fields)


def test_it_corrects_the_volume_and_route_with_one_audit_event(injection, coordinator_a):
    start = head_sequence()
    _correct(coordinator_a, injection, volume_ml=Decimal("2.5"), route=Injection.Route.INTRAVENOUS)

    injection.refresh_from_db()
    assert (injection.volume_ml, injection.route) == (Decimal("2.500"), "intravenous")
    event = one_event_since(start)
    assert (event.action, event.actor, event.subject_id, event.site_id, event.object_id) == (
        AuditAction.INJECTION_UPDATED,
        coordinator_a,
        injection.subject_id,
        injection.subject.site_id,
        str(injection.pk),
    )
    assert event.changes == {"volume_ml": ["2.000", "2.500"], "route": ["intramyocardial", "intravenous"]}
    assert event.reason == "volume misread from the syringe label"


def test_it_corrects_who_gave_and_who_verified(injection, coordinator_a, investigator_a):
    start = head_sequence()
    _correct(
        coordinator_a,
        injection,
        administered_by=coordinator_a,
        verified_by=investigator_a,
        verifier_password=f.PASSWORD,
    )  # the new verifier confirms
    injection.refresh_from_db()
    assert (injection.administered_by, injection.verified_by) == (coordinator_a, investigator_a)
    assert one_event_since(start).changes == {
        "administered_by_id": [investigator_a.pk, coordinator_a.pk],
        "verified_by_id": [coordinator_a.pk, investigator_a.pk],
    }


def test_it_corrects_the_planned_duration_with_old_and_new_values(injection, coordinator_a):
    start = head_sequence()
    _correct(coordinator_a, injection, planned_duration_s=Decimal("30"), reason="planned duration left out of the CRF")

    injection.refresh_from_db()
    assert injection.planned_duration_s == Decimal("30.000")
    event = one_event_since(start)
    assert event.action == AuditAction.INJECTION_UPDATED
    assert event.changes == {"planned_duration_s": [None, "30.000"]}

    start = head_sequence()
    _correct(coordinator_a, injection, planned_duration_s=None, reason="no planned duration in the protocol")
    injection.refresh_from_db()
    assert injection.planned_duration_s is None  # back to the platform default
    assert one_event_since(start).changes == {"planned_duration_s": ["30.000", None]}


def test_it_refuses_a_negative_planned_duration(injection, coordinator_a, nothing_written):
    error = _refused(
        "planned_duration_s_negative", nothing_written, coordinator_a, injection, planned_duration_s=Decimal("-1")
    )
    assert (error.field, status_for(error.code)) == ("planned_duration_s", 400)


@pytest.mark.parametrize("reason", ["", "  ", None])
def test_it_requires_a_reason(injection, coordinator_a, nothing_written, reason):
    _refused("reason_required", nothing_written, coordinator_a, injection, reason=reason, volume_ml=Decimal("3"))


@pytest.mark.parametrize(
    "fields", [{}, {"volume_ml": Decimal("2.0"), "route": "intramyocardial"}], ids=["empty", "same values"]
)
def test_it_refuses_a_correction_that_changes_nothing(injection, coordinator_a, nothing_written, fields):
    _refused("no_change", nothing_written, coordinator_a, injection, **fields)


@pytest.mark.parametrize(
    "field,code",
    [
        ("subject", "subject_not_correctable"),
        ("batch", "batch_not_correctable"),
        ("id", "id_not_correctable"),
        ("created_at", "created_at_not_correctable"),
    ],
)
def test_it_refuses_fields_that_may_not_be_corrected(injection, coordinator_a, nothing_written, field, code):
    _refused(code, nothing_written, coordinator_a, injection, **{field: None})


def test_it_allows_the_cells_the_batch_has_left_counting_the_others(ready, injection, coordinator_a, investigator_a):
    subject, _, batch = ready  # 100 M cells; this injection 10 M
    f.InjectionFactory(
        batch=batch,
        subject=subject,
        administered_cells=60_000_000,
        administered_by=investigator_a,
        verified_by=coordinator_a,
    )
    _correct(coordinator_a, injection, administered_cells=40_000_000)  # exactly what is left
    injection.refresh_from_db()
    assert injection.administered_cells == 40_000_000


def test_it_refuses_more_cells_than_the_batch_has_left(
    ready, injection, coordinator_a, investigator_a, nothing_written
):
    subject, _, batch = ready
    f.InjectionFactory(
        batch=batch,
        subject=subject,
        administered_cells=60_000_000,
        administered_by=investigator_a,
        verified_by=coordinator_a,
    )
    error = _refused("insufficient_cells", nothing_written, coordinator_a, injection, administered_cells=40_000_001)
    assert "40,000,000" in error.message


def test_it_refuses_the_administrator_as_verifier(injection, coordinator_a, investigator_a, nothing_written):
    _refused("verifier_is_administrator", nothing_written, coordinator_a, injection, verified_by=investigator_a)


def test_it_refuses_an_administrator_without_a_clinical_role_at_the_site(
    injection, coordinator_a, imaging_a, nothing_written
):
    _refused("administered_by_not_at_site", nothing_written, coordinator_a, injection, administered_by=imaging_a)


def test_it_refuses_a_verifier_from_another_site(injection, coordinator_a, coordinator_b, nothing_written):
    _refused("verified_by_not_at_site", nothing_written, coordinator_a, injection, verified_by=coordinator_b)


def test_it_refuses_a_time_before_the_labelling(ready, injection, coordinator_a, nothing_written):
    _, _, batch = ready
    _refused(
        "administered_before_labelling",
        nothing_written,
        coordinator_a,
        injection,
        administered_at=batch.labelled_at - dt.timedelta(minutes=1),
    )


def test_it_refuses_a_time_in_the_future(injection, coordinator_a, nothing_written):
    _refused(
        "administered_at_in_future",
        nothing_written,
        coordinator_a,
        injection,
        administered_at=timezone.now() + dt.timedelta(hours=1),
    )


def test_it_refuses_a_time_after_imaging_consent_was_withdrawn(ready, injection, coordinator_a, nothing_written):
    _, consent, _ = ready
    consent_withdraw(
        actor=coordinator_a, consent=consent, scopes=["imaging"], reason="subject asked", withdrawn_at=f.days_ago(5)
    )
    _refused("consent_withdrawn", nothing_written, coordinator_a, injection, administered_at=f.days_ago(2))


def test_it_refuses_a_time_when_no_consent_was_in_force(ready, coordinator_a, investigator_a, nothing_written):
    subject, consent, batch = ready
    consent.signed_at = f.days_ago(12)
    consent.save()
    injection = f.InjectionFactory(
        batch=batch,
        subject=subject,
        administered_by=investigator_a,
        verified_by=coordinator_a,
        administered_at=f.days_ago(10),
    )
    _refused("consent_missing", nothing_written, coordinator_a, injection, administered_at=f.days_ago(15))


@pytest.mark.parametrize("who", ["imaging_a", "investigator_a", "coordinator_b", "monitor", "sponsor"])
def test_it_lets_only_a_coordinator_of_the_site_correct(request, injection, nothing_written, who):
    error = _refused("forbidden", nothing_written, request.getfixturevalue(who), injection, volume_ml=Decimal("3"))
    assert status_for(error.code) == 403


def test_it_invalidates_the_signature_of_a_signed_visit(ready, injection, coordinator_a, investigator_a):
    subject, _, _ = ready
    signature = signature_apply(signer=investigator_a, password=f.PASSWORD, obj=subject, meaning="approval")
    start = head_sequence()
    _correct(coordinator_a, injection, anatomical_target="left ventricle, lateral wall")

    signature.refresh_from_db()
    assert not signature.valid
    assert [e.action for e in AuditEvent.objects.filter(sequence__gt=start).order_by("sequence")] == [
        AuditAction.INJECTION_UPDATED,
        AuditAction.SIGNATURE_INVALIDATED,
    ]
    assert Signature.objects.filter(valid=True).count() == 0


# --------------------------------------------------------------------------- API


def _url(injection):
    return reverse("injection-detail", kwargs={"pk": injection.pk})


def test_it_corrects_through_the_api(api, injection, coordinator_a, investigator_a):
    response = api(coordinator_a).patch(
        _url(injection),
        {
            "volume_ml": "2.5",
            "administered_by": "coordinator_a",
            "verified_by": "investigator_a",
            "verifier_password": f.PASSWORD,
            "reason": "swapped on the paper record",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["volume_ml"], body["administered_by"], body["verified_by"]) == (
        "2.500",
        "coordinator_a",
        "investigator_a",
    )


def test_it_corrects_the_planned_duration_through_the_api(api, injection, coordinator_a):
    start = head_sequence()
    response = api(coordinator_a).patch(
        _url(injection), {"planned_duration_s": "600", "reason": "infusion over 10 min per protocol"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["planned_duration_s"] == "600.000"
    assert one_event_since(start).changes == {"planned_duration_s": [None, "600.000"]}


def test_the_api_refuses_a_negative_planned_duration_and_writes_nothing(api, injection, coordinator_a, nothing_written):
    with nothing_written():
        response = api(coordinator_a).patch(
            _url(injection), {"planned_duration_s": -5, "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "planned_duration_s_negative"
    assert list(response.json()["error"]["fields"]) == ["planned_duration_s"]
    injection.refresh_from_db()
    assert injection.planned_duration_s is None


def test_it_answers_a_broken_rule_in_the_one_error_shape(api, injection, coordinator_a, nothing_written):
    client = api(coordinator_a)
    with nothing_written():
        response = client.patch(
            _url(injection),
            {"verified_by": "investigator_a", "reason": "typo on the CRF, source checked"},
            format="json",
        )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "verifier_is_administrator"
    assert list(response.json()["error"]["fields"]) == ["verified_by"]


@pytest.mark.parametrize("who,status", [("coordinator_b", 404), ("monitor", 403), ("sponsor", 403)])
def test_it_validates_ownership(request, api, injection, nothing_written, who, status):
    client = api(request.getfixturevalue(who))
    with nothing_written():
        response = client.patch(
            _url(injection), {"volume_ml": "3", "reason": "typo on the CRF, source checked"}, format="json"
        )
    assert response.status_code == status
    injection.refresh_from_db()
    assert injection.volume_ml == Decimal("2.000")
