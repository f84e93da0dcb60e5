from __future__ import annotations

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import ApiToken
from tests.factories import PASSWORD

URL = "/api/v1/auth/token/"


def test_it_issues_a_token_for_good_credentials_and_audits_it(api, coordinator_a):
    response = api().post(URL, {"username": "coordinator_a", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    # Each request now issues a new, expiring token; only its hash is stored (see
    # tests/compliance/test_api_tokens.py), so the key is checked by its prefix.
    body = response.json()
    token = ApiToken.objects.get(user=coordinator_a)
    assert body["token"].startswith(f"{token.prefix}.")
    assert (body["id"], body["scope"]) == (token.pk, "full")
    event = AuditEvent.objects.get()
    assert (event.action, event.actor) == (AuditAction.TOKEN_ISSUED, coordinator_a)


def test_it_lets_the_token_read_the_api(api, coordinator_a, site_a):
    key = api().post(URL, {"username": "coordinator_a", "password": PASSWORD}, format="json").json()["token"]
    response = api().get("/api/v1/sites/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
    assert [row["code"] for row in response.json()["results"]] == ["A"]


def test_it_refuses_bad_credentials_in_the_error_shape_and_audits_the_failure(api, coordinator_a):
    response = api().post(URL, {"username": "coordinator_a", "password": "wrong-password"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_credentials", "message": "Unable to log in with the credentials given."}
    }
    assert not ApiToken.objects.exists()
    event = AuditEvent.objects.get()
    assert event.action == AuditAction.LOGIN_FAILED
    assert event.actor is None
    assert event.changes == {"username": "coordinator_a", "via": "api_token"}


def test_it_refuses_a_request_without_credentials(api, db):
    response = api().post(URL, {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"username", "password"}
    assert not AuditEvent.objects.exists()
