"""The forms call the same services as the API: rules refuse with the message next to
the field, and a refused form writes nothing."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from trials.models import Consent, Injection, Subject, SubjectIdentity


def _local(value: dt.datetime) -> str:
    # Typed on the site's clock (site A: Europe/Berlin), as the form says (trials.site_time).
    return value.astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%dT%H:%M")


def test_it_enrols_a_subject_with_identity(browser_client, coordinator_a, site_a):
    response = browser_client(coordinator_a).post(
        "/subjects/new/",
        {
            "site": site_a.pk,
            "enrolment_date": timezone.localdate().isoformat(),
            "status": "enrolled",
            "full_name": "Erika Mustermann",
            "date_of_birth": "1961-04-17",
            "medical_record_number": "MRN77",
        },
    )
    subject = Subject.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/subjects/{subject.pk}/consent/"
    assert SubjectIdentity.objects.get(subject=subject).medical_record_number == "MRN77"


def test_it_shows_a_rule_violation_next_to_the_field(browser_client, coordinator_a, ready, nothing_written):
    subject, consent, _ = ready
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(
            f"/subjects/{subject.pk}/consent/",
            {
                "document": consent.document_id,
                "scopes": ["imaging"],
                "signed_at": _local(timezone.now() + dt.timedelta(days=2)),
            },
        )
    assert response.status_code == 400
    assert response.context["form"].errors["signed_at"] == ["The signature time cannot be in the future."]
    assert b'id="id_signed_at_error"' in response.content


def test_it_records_a_withdrawal_only_with_a_reason(browser_client, coordinator_a, ready, nothing_written):
    subject, consent, _ = ready
    client = browser_client(coordinator_a)
    with nothing_written():
        refused = client.post(f"/consents/{consent.pk}/withdraw/", {"scopes": ["data_sharing"], "reason": ""})
    assert refused.context["form"].errors["reason"]
    client.post(f"/consents/{consent.pk}/withdraw/", {"scopes": ["data_sharing"], "reason": "moved abroad"})
    consent.refresh_from_db()
    assert list(consent.withdrawn_scopes) == ["data_sharing"] and consent.withdrawal_reason == "moved abroad"


def _injection_form(batch, administered_by, verified_by, password):
    return {
        "batch": batch.pk,
        "administered_cells": 1_000_000,
        "volume_ml": "1.5",
        "route": "intramyocardial",
        "anatomical_target": "LV anterior wall",
        "administered_at": _local(timezone.now() - dt.timedelta(hours=1)),
        "administered_by": administered_by.pk,
        "verified_by": verified_by.pk,
        "verifier_password": password,
    }


def test_it_records_an_injection_verified_by_a_second_person(browser_client, coordinator_a, investigator_a, ready):
    subject, _, batch = ready
    response = browser_client(coordinator_a).post(
        f"/subjects/{subject.pk}/injection/", _injection_form(batch, coordinator_a, investigator_a, f.PASSWORD)
    )
    assert response.status_code == 302
    injection = Injection.objects.get()
    assert (injection.administered_by, injection.verified_by) == (coordinator_a, investigator_a)


def test_it_records_the_planned_duration_from_the_form(browser_client, coordinator_a, investigator_a, ready):
    subject, _, batch = ready
    client = browser_client(coordinator_a)
    page = client.get(f"/subjects/{subject.pk}/injection/").content.decode()
    assert "empty for the platform default, 0 for a bolus" in page
    response = client.post(
        f"/subjects/{subject.pk}/injection/",
        {**_injection_form(batch, coordinator_a, investigator_a, f.PASSWORD), "planned_duration_s": "30"},
    )
    assert response.status_code == 302
    injection = Injection.objects.get()
    assert injection.planned_duration_s == Decimal("30.000")
    event = AuditEvent.objects.get(action=AuditAction.INJECTION_RECORDED)
    assert event.changes["planned_duration_s"] == [None, "30.000"]
    assert "planned over 30 s" in client.get(f"/subjects/{subject.pk}/").content.decode()


def test_it_refuses_a_negative_planned_duration_next_to_the_field(
    browser_client, coordinator_a, investigator_a, ready, nothing_written
):
    subject, _, batch = ready
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(
            f"/subjects/{subject.pk}/injection/",
            {**_injection_form(batch, coordinator_a, investigator_a, f.PASSWORD), "planned_duration_s": "-30"},
        )
    assert response.status_code == 400
    assert response.context["form"].errors["planned_duration_s"] == [
        "The planned duration of the administration (s) cannot be negative; got -30."
    ]


def test_it_refuses_the_injection_when_the_verifier_password_is_wrong(
    browser_client, coordinator_a, investigator_a, ready
):
    subject, _, batch = ready
    client = browser_client(coordinator_a)
    before = AuditEvent.objects.count()
    response = client.post(
        f"/subjects/{subject.pk}/injection/", _injection_form(batch, coordinator_a, investigator_a, "wrong")
    )
    assert "verifier_password" in response.context["form"].errors
    assert Injection.objects.count() == 0
    # The refusal is audited (and counted toward the verifier's lockout); nothing else is written.
    written = AuditEvent.objects.order_by("sequence")[before:]
    assert sorted(e.action for e in written) == [AuditAction.INJECTION_VERIFICATION_REFUSED, AuditAction.LOGIN_FAILED]


def test_it_refuses_a_verifier_who_is_the_administrator(browser_client, coordinator_a, ready, nothing_written):
    subject, _, batch = ready
    client = browser_client(coordinator_a)
    with nothing_written():
        response = client.post(
            f"/subjects/{subject.pk}/injection/", _injection_form(batch, coordinator_a, coordinator_a, f.PASSWORD)
        )
    assert response.context["form"].errors["verified_by"] == [
        "The verifier must be someone other than the administrator."
    ]
    assert Consent.objects.count() == 1


def test_it_signs_results_with_the_password_asked_again(browser_client, investigator_a, quantified):
    client = browser_client(investigator_a)
    refused = client.post(f"/scans/{quantified.pk}/sign/", {"meaning": "approval", "password": "nope"})
    assert refused.context["sign_form"].errors["password"] == ["The password is wrong: nothing was signed."]
    signed = client.post(f"/scans/{quantified.pk}/sign/", {"meaning": "approval", "password": f.PASSWORD})
    assert signed.status_code == 302
    assert b"Meaning: Approval" in client.get(f"/scans/{quantified.pk}/").content
