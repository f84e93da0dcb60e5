from __future__ import annotations

import time

from django.test import Client

from audit.actions import AuditAction
from audit.models import AuditEvent


def _idle_session(client, user, seconds_ago):
    client.force_login(user)
    session = client.session
    session["compliance_last_activity"] = time.time() - seconds_ago
    session.save()


def test_it_logs_off_an_idle_browser_session_and_audits_it(settings, auditor):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    client = Client()
    _idle_session(client, auditor, 901)

    response = client.get("/compliance/audit/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action=AuditAction.LOGOUT)
    assert event.actor == auditor and event.changes == {"reason": "idle"}
    # Still logged off on the next request.
    assert client.get("/compliance/audit/").status_code == 302


def test_it_answers_an_idle_api_session_with_401(settings, api, auditor):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 60
    client = Client()
    _idle_session(client, auditor, 61)
    response = client.get("/api/v1/audit-events/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "session_expired"
    assert AuditEvent.objects.filter(action=AuditAction.LOGOUT, changes__reason="idle").count() == 1


def test_it_keeps_an_active_session(settings, auditor):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 900
    client = Client()
    _idle_session(client, auditor, 899)
    assert client.get("/compliance/audit/").status_code == 200
    assert client.session["compliance_last_activity"] > time.time() - 5
    assert not AuditEvent.objects.filter(action=AuditAction.LOGOUT).exists()


def test_it_defaults_to_fifteen_minutes():
    from django.conf import settings

    assert settings.SESSION_IDLE_TIMEOUT_SECONDS == 15 * 60
    assert settings.SESSION_SAVE_EVERY_REQUEST is True
