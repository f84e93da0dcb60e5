from __future__ import annotations

import pytest
from django.test import Client

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests.factories import PASSWORD


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.AXES_FAILURE_LIMIT = 3


def _events(action):
    return AuditEvent.objects.filter(action=action)


def test_it_locks_the_account_after_repeated_failures_on_the_login_form(coordinator_a):
    client = Client()
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "coordinator_a", "password": "wrong"})
    assert response.status_code == 429
    assert _events(AuditAction.LOGIN_FAILED).count() == 3
    assert _events(AuditAction.ACCOUNT_LOCKED).filter(changes__username="coordinator_a").exists()

    # Locked: the right password is refused too, and no session is opened.
    response = client.post("/accounts/login/", {"username": "coordinator_a", "password": PASSWORD})
    assert response.status_code == 429 and b"locked" in response.content
    assert "_auth_user_id" not in client.session
    assert not _events(AuditAction.LOGIN_SUCCEEDED).exists()


def test_it_locks_the_account_after_repeated_failures_on_the_token_endpoint(api, coordinator_a):
    client = api()
    for _ in range(2):
        response = client.post("/api/v1/auth/token/", {"username": "coordinator_a", "password": "wrong"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_credentials"
    response = client.post("/api/v1/auth/token/", {"username": "coordinator_a", "password": "wrong"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "account_locked"

    response = client.post("/api/v1/auth/token/", {"username": "coordinator_a", "password": PASSWORD})
    assert response.status_code == 429
    assert "token" not in response.json()
    failed = _events(AuditAction.LOGIN_FAILED)
    assert failed.count() == 4 and {e.changes["via"] for e in failed} == {"api_token"}
    assert _events(AuditAction.ACCOUNT_LOCKED).exists()
    assert not _events(AuditAction.TOKEN_ISSUED).exists()


def test_it_counts_the_login_form_and_the_token_endpoint_together(api, coordinator_a):
    Client().post("/accounts/login/", {"username": "coordinator_a", "password": "wrong"})
    Client().post("/accounts/login/", {"username": "coordinator_a", "password": "wrong"})
    response = api().post("/api/v1/auth/token/", {"username": "coordinator_a", "password": "wrong"})
    assert response.status_code == 429


def test_it_logs_in_and_audits_success_below_the_limit(coordinator_a):
    client = Client()
    client.post("/accounts/login/", {"username": "coordinator_a", "password": "wrong"})
    response = client.post("/accounts/login/", {"username": "coordinator_a", "password": PASSWORD})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(coordinator_a.pk)
    assert _events(AuditAction.LOGIN_SUCCEEDED).get().actor == coordinator_a
