from __future__ import annotations

import pytest
from django.test import Client
from django_otp.oath import TOTP

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.twofactor import enrol_device
from tests.factories import PASSWORD


def _code(device) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def _identity_url(subject):
    return f"/api/v1/subjects/{subject.pk}/identity/"


@pytest.fixture
def require_2fa(settings):
    settings.REQUIRE_2FA = True
    # django-otp makes a device wait 2^(n-1) seconds after n failures; these tests
    # follow a wrong code with the right one at once.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def _login(client, username):
    response = client.post("/accounts/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302
    return response


def test_it_holds_a_phi_role_at_the_otp_step_until_verified(require_2fa, ready, coordinator_a):
    subject = ready[0]
    device = enrol_device(user=coordinator_a)
    client = Client()
    response = _login(client, "coordinator_a")
    assert response["Location"].startswith("/accounts/login/otp/")

    # Password alone: no PHI, and no other page either.
    refused = client.get(_identity_url(subject))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "two_factor_required"
    assert client.get("/").status_code == 302
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ).exists()

    wrong = client.post("/accounts/login/otp/", {"otp_token": "000000" if _code(device) != "000000" else "111111"})
    assert wrong.status_code == 400
    assert AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_FAILED, actor=coordinator_a).exists()

    assert client.post("/accounts/login/otp/", {"otp_token": _code(device), "next": "/"}).status_code == 302
    read = client.get(_identity_url(subject))
    assert read.status_code == 200 and read.json()["full_name"] == "Erika Mustermann"
    assert AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ, actor=coordinator_a).count() == 1


def test_it_needs_no_second_factor_for_roles_without_phi(require_2fa, imaging_a):
    client = Client()
    response = _login(client, "imaging_a")
    assert not response["Location"].startswith("/accounts/login/otp/")
    assert client.get("/").status_code == 200


def test_it_refuses_a_token_to_a_phi_role_without_a_valid_otp(require_2fa, api, coordinator_a, nothing_written):
    client = api()
    with nothing_written():
        not_enrolled = client.post("/api/v1/auth/token/", {"username": "coordinator_a", "password": PASSWORD})
    assert not_enrolled.status_code == 403 and not_enrolled.json()["error"]["code"] == "two_factor_not_enrolled"

    device = enrol_device(user=coordinator_a)
    missing = client.post("/api/v1/auth/token/", {"username": "coordinator_a", "password": PASSWORD})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "otp_required"
    wrong = client.post(
        "/api/v1/auth/token/",
        {"username": "coordinator_a", "password": PASSWORD, "otp": "000000" if _code(device) != "000000" else "111111"},
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "otp_invalid"
    assert not AuditEvent.objects.filter(action=AuditAction.TOKEN_ISSUED).exists()

    issued = client.post(
        "/api/v1/auth/token/", {"username": "coordinator_a", "password": PASSWORD, "otp": _code(device)}
    )
    assert issued.status_code == 200 and issued.json()["token"]
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_ISSUED, actor=coordinator_a).exists()


def test_it_stops_honouring_a_token_once_the_device_is_gone(require_2fa, api, ready, coordinator_a):
    device = enrol_device(user=coordinator_a)
    token = (
        api()
        .post("/api/v1/auth/token/", {"username": "coordinator_a", "password": PASSWORD, "otp": _code(device)})
        .json()["token"]
    )
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(_identity_url(ready[0])).status_code == 200
    device.delete()
    refused = client.get(_identity_url(ready[0]))
    # A refused credential is a 401 with its challenge (issue #12: it was a 403).
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "authentication_failed"
    assert refused["WWW-Authenticate"] == "Token"


def test_it_lets_the_embedded_demo_run_without_2fa(settings, api, ready, coordinator_a):
    assert settings.REQUIRE_2FA is False  # the embedded default
    client = Client()
    response = _login(client, "coordinator_a")
    assert not response["Location"].startswith("/accounts/login/otp/")
    assert client.get(_identity_url(ready[0])).status_code == 200
    assert api().post("/api/v1/auth/token/", {"username": "coordinator_a", "password": PASSWORD}).status_code == 200
