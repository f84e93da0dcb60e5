"""E-signing asks for the password again; a wrong one counts toward the same lockout as a
failed sign-in, so the signing form is no password oracle."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from compliance.signatures import signature_apply
from config.api_errors import status_for
from config.errors import RuleViolation
from tests.factories import PASSWORD


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.AXES_FAILURE_LIMIT = 3


def _sign(client, visit, password):
    return client.post(
        "/api/v1/signatures/",
        {"object_type": "trials.subject", "object_id": str(visit.pk), "meaning": "approval", "password": password},
    )


def test_it_refuses_even_the_right_password_once_wrong_ones_reach_the_limit(api, visit, investigator_a):
    client = api(investigator_a)
    for _ in range(2):
        response = _sign(client, visit, "guess")
        assert response.status_code == 403 and response.json()["error"]["code"] == "signature_refused"
    response = _sign(client, visit, "guess")
    assert response.status_code == 429 and response.json()["error"]["code"] == "account_locked"

    response = _sign(client, visit, PASSWORD)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "account_locked" and list(error["fields"]) == ["password"]
    assert Signature.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.SIGNATURE_APPLIED).exists()
    refusals = AuditEvent.objects.filter(action=AuditAction.SIGNATURE_REFUSED).order_by("sequence")
    assert [e.changes["why"] for e in refusals] == [
        "wrong password",
        "wrong password",
        "account locked",
        "account locked",
    ]
    failed = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED)
    assert failed.count() == 4 and {e.changes["via"] for e in failed} == {"e_signature"}
    assert {e.changes["username"] for e in failed} == {"investigator_a"}
    assert AuditEvent.objects.filter(action=AuditAction.ACCOUNT_LOCKED, changes__username="investigator_a").exists()


def test_it_shares_one_count_with_the_login_form(api, visit, investigator_a):
    client = api(investigator_a)
    Client().post("/accounts/login/", {"username": "investigator_a", "password": "wrong"})
    _sign(client, visit, "guess")
    # The third failure, on the login form, locks the account.
    response = Client().post("/accounts/login/", {"username": "investigator_a", "password": "wrong"})
    assert response.status_code == 429
    assert _sign(client, visit, PASSWORD).status_code == 429
    assert Signature.objects.count() == 0


def test_it_signs_with_the_right_password_below_the_limit(api, visit, investigator_a):
    client = api(investigator_a)
    _sign(client, visit, "guess")
    response = _sign(client, visit, PASSWORD)
    assert response.status_code == 201, response.json()
    assert Signature.objects.get().signer == investigator_a


def test_the_service_refuses_a_locked_signer_without_an_http_request(visit, investigator_a):
    for _ in range(3):
        with pytest.raises(RuleViolation):
            signature_apply(signer=investigator_a, password="guess", obj=visit, meaning="approval")
    with pytest.raises(RuleViolation) as refused:
        signature_apply(signer=investigator_a, password=PASSWORD, obj=visit, meaning="approval")
    assert (refused.value.code, status_for(refused.value.code)) == ("account_locked", 429)
    assert Signature.objects.count() == 0
