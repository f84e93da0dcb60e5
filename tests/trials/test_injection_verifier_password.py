"""Four eyes over every interface: the service checks the verifier's own password, so an
API client cannot record an injection "verified by" a colleague who never confirmed it.
A wrong password is audited and counts toward the verifier's lockout."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from tests.factories import PASSWORD
from trials.models import Injection


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.AXES_FAILURE_LIMIT = 3


def _body(subject, batch, **extra):
    return {
        "subject": subject.pk,
        "batch": batch.pk,
        "administered_cells": 25_000_000,
        "volume_ml": "2.0",
        "route": "intramyocardial",
        "anatomical_target": "LV anterior wall",
        "administered_at": f.days_ago(1).isoformat(),
        "administered_by": "coordinator_a",
        "verified_by": "investigator_a",
        **extra,
    }


def test_it_requires_the_verifiers_password(api, ready, coordinator_a, investigator_a, nothing_written):
    subject, _, batch = ready
    with nothing_written():
        response = api(coordinator_a).post("/api/v1/injections/", _body(subject, batch), format="json")
    assert response.status_code == 400
    assert "verifier_password" in response.json()["error"]["fields"]
    assert Injection.objects.count() == 0


def test_it_refuses_a_wrong_verifier_password_and_audits_it(api, ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    response = api(coordinator_a).post(
        "/api/v1/injections/", _body(subject, batch, verifier_password="guess"), format="json"
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "verifier_password_wrong" and list(error["fields"]) == ["verifier_password"]
    assert Injection.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.INJECTION_RECORDED).exists()
    refused = AuditEvent.objects.get(action=AuditAction.INJECTION_VERIFICATION_REFUSED)
    assert refused.actor == coordinator_a and refused.subject_id == subject.pk and refused.site_id == subject.site_id
    assert refused.changes == {"verifier": "investigator_a", "batch": batch.pk, "why": "wrong password"}
    failed = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert failed.changes == {"username": "investigator_a", "via": "injection_verifier"}


def test_it_records_the_injection_with_the_verifiers_password(api, ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    response = api(coordinator_a).post(
        "/api/v1/injections/", _body(subject, batch, verifier_password=PASSWORD), format="json"
    )
    assert response.status_code == 201, response.json()
    injection = Injection.objects.get()
    assert (injection.administered_by, injection.verified_by) == (coordinator_a, investigator_a)
    assert not AuditEvent.objects.filter(action=AuditAction.INJECTION_VERIFICATION_REFUSED).exists()


def test_it_refuses_a_locked_out_verifier_even_with_the_right_password(api, ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    client = api(coordinator_a)
    for _ in range(3):
        client.post("/api/v1/injections/", _body(subject, batch, verifier_password="guess"), format="json")
    response = client.post("/api/v1/injections/", _body(subject, batch, verifier_password=PASSWORD), format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "account_locked"
    assert Injection.objects.count() == 0
    refusals = AuditEvent.objects.filter(action=AuditAction.INJECTION_VERIFICATION_REFUSED).order_by("sequence")
    # The third wrong password reaches the limit; the right one after it is refused too.
    assert [e.changes["why"] for e in refusals] == [
        "wrong password",
        "wrong password",
        "account locked",
        "account locked",
    ]
    # The verifier's sign-in from the same address is locked by the same count.
    login = Client().post("/accounts/login/", {"username": "investigator_a", "password": PASSWORD})
    assert login.status_code == 429


def test_the_web_form_goes_through_the_same_check(client, ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    client.force_login(coordinator_a)
    form = {
        "batch": batch.pk,
        "administered_cells": 1_000_000,
        "volume_ml": "1.5",
        "route": "intramyocardial",
        "anatomical_target": "LV",
        "administered_at": (f.days_ago(1)).strftime("%Y-%m-%dT%H:%M"),
        "administered_by": coordinator_a.pk,
        "verified_by": investigator_a.pk,
        "verifier_password": "guess",
    }
    response = client.post(f"/subjects/{subject.pk}/injection/", form)
    assert response.context["form"].errors["verifier_password"] == [
        "The verifier's password is wrong: nothing was recorded."
    ]
    assert Injection.objects.count() == 0
    assert AuditEvent.objects.filter(action=AuditAction.INJECTION_VERIFICATION_REFUSED).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, changes__via="injection_verifier").count() == 1


# --------------------------------------------------------------------------- corrections


@pytest.fixture
def injection(ready, coordinator_a, investigator_a):
    subject, _, batch = ready
    return f.InjectionFactory(subject=subject, batch=batch, administered_by=coordinator_a, verified_by=investigator_a)


def test_a_correction_naming_another_verifier_needs_that_verifiers_password(
    api, injection, coordinator_a, investigator_a
):
    client = api(coordinator_a)
    swap = {"administered_by": "investigator_a", "verified_by": "coordinator_a", "reason": "names swapped"}
    response = client.patch(f"/api/v1/injections/{injection.pk}/", swap, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "verifier_password_wrong"
    injection.refresh_from_db()
    assert (injection.administered_by, injection.verified_by) == (coordinator_a, investigator_a)
    assert not AuditEvent.objects.filter(action=AuditAction.INJECTION_UPDATED).exists()
    refused = AuditEvent.objects.get(action=AuditAction.INJECTION_VERIFICATION_REFUSED)
    assert refused.changes["verifier"] == "coordinator_a" and refused.subject_id == injection.subject_id

    response = client.patch(
        f"/api/v1/injections/{injection.pk}/", {**swap, "verifier_password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.json()
    injection.refresh_from_db()
    assert (injection.administered_by, injection.verified_by) == (investigator_a, coordinator_a)


def test_a_correction_that_keeps_the_verifier_needs_no_password(api, injection, coordinator_a):
    response = api(coordinator_a).patch(
        f"/api/v1/injections/{injection.pk}/", {"volume_ml": "2.5", "reason": "misread syringe"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert not AuditEvent.objects.filter(
        action__in=[AuditAction.INJECTION_VERIFICATION_REFUSED, AuditAction.LOGIN_FAILED]
    ).exists()


def test_the_web_correction_asks_the_new_verifier_for_their_password(client, injection, coordinator_a, investigator_a):
    client.force_login(coordinator_a)
    form = {
        "administered_cells": injection.administered_cells,
        "volume_ml": str(injection.volume_ml),
        "route": injection.route,
        "anatomical_target": injection.anatomical_target,
        "administered_at": timezone.localtime(injection.administered_at).strftime("%Y-%m-%dT%H:%M"),
        "administered_by": investigator_a.pk,
        "verified_by": coordinator_a.pk,
        "reason": "names swapped",
    }
    response = client.post(f"/injections/{injection.pk}/edit/", {**form, "verifier_password": "guess"})
    assert response.context["form"].errors["verifier_password"] == [
        "The verifier's password is wrong: nothing was recorded."
    ]
    injection.refresh_from_db()
    assert injection.verified_by == investigator_a
    response = client.post(f"/injections/{injection.pk}/edit/", {**form, "verifier_password": PASSWORD})
    assert response.status_code == 302
    injection.refresh_from_db()
    assert injection.verified_by == coordinator_a
