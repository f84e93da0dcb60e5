"""API tokens: per client, hashed at rest, expiring (absolute and idle), revocable by their
owner, an administrator, a log-out and a password change; scoped tokens for scanner
bridges and integrations; every issue, revocation, expiry and refused use audited."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.db import connection
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import ApiToken
from tests import factories as f
from tests.factories import PASSWORD

TOKEN_URL = "/api/v1/auth/token/"
TOKENS_URL = "/api/v1/auth/tokens/"
LOGOUT_URL = "/api/v1/auth/logout/"


def _issue(api, username="coordinator_a", **extra) -> dict:
    response = api().post(TOKEN_URL, {"username": username, "password": PASSWORD, **extra}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _get(api, key, url="/api/v1/sites/"):
    return api().get(url, HTTP_AUTHORIZATION=f"Token {key}")


def _actions() -> list[int]:
    return list(AuditEvent.objects.order_by("sequence").values_list("action", flat=True))


def _age(token_id, **fields):
    ApiToken.objects.filter(pk=token_id).update(**fields)


# --------------------------------------------------------------------------- issue, at rest


def test_it_stores_only_a_hash_of_the_key(api, coordinator_a):
    issued = _issue(api, name="analysis laptop")
    key = issued["token"]

    token = ApiToken.objects.get(pk=issued["id"])
    prefix, secret = key.split(".", 1)
    assert token.prefix == prefix
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    # No column of the stored row holds the key or its secret part.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")  # noqa: S608 - our own table name
        row_text = " ".join(str(value) for value in cursor.fetchone())
    assert secret not in row_text and key not in row_text
    assert (token.name, token.scope, token.user) == ("analysis laptop", "full", coordinator_a)
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_ISSUED)
    assert event.object_id == str(token.pk) and secret not in str(event.changes)


def test_it_issues_a_new_token_for_each_client(api, coordinator_a, site_a):
    first, second = _issue(api, name="laptop"), _issue(api, name="notebook server")

    assert first["token"] != second["token"]
    assert ApiToken.objects.filter(user=coordinator_a).count() == 2
    assert _get(api, first["token"]).status_code == 200
    assert _get(api, second["token"]).status_code == 200
    expires = dt.datetime.fromisoformat(first["expires_at"].replace("Z", "+00:00"))
    assert timezone.now() < expires <= timezone.now() + dt.timedelta(hours=12, minutes=1)


# --------------------------------------------------------------------------- 401 for bad tokens


def test_it_answers_401_with_the_envelope_for_a_bad_token_and_audits_it(api, coordinator_a):
    _issue(api)
    before = AuditEvent.objects.count()

    response = _get(api, "0123456789ab.not-the-secret")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"error": {"code": "authentication_failed", "message": "Invalid token."}}
    assert _actions()[before:] == [AuditAction.TOKEN_REFUSED]
    assert AuditEvent.objects.last().changes["reason"] == "invalid"


def test_it_answers_401_for_a_right_prefix_with_a_wrong_secret(api, coordinator_a):
    prefix = _issue(api)["token"].split(".")[0]
    response = _get(api, f"{prefix}.wrong")
    assert response.status_code == 401
    assert response.json()["error"] == {"code": "authentication_failed", "message": "Invalid token."}
    assert ApiToken.objects.get().last_used_at is None


def test_it_answers_401_not_authenticated_without_credentials(api, db):
    response = api().get("/api/v1/sites/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"


# --------------------------------------------------------------------------- expiry


def test_it_expires_a_token_at_its_expiry_and_audits_it_once(api, coordinator_a):
    issued = _issue(api)
    _age(
        issued["id"],
        created_at=timezone.now() - dt.timedelta(hours=12),
        last_used_at=timezone.now(),
        expires_at=timezone.now() - dt.timedelta(seconds=1),
    )
    before = AuditEvent.objects.count()

    first, again = _get(api, issued["token"]), _get(api, issued["token"])

    assert first.status_code == again.status_code == 401
    assert first.json()["error"] == {"code": "authentication_failed", "message": "Token expired."}
    assert _actions()[before:] == [AuditAction.TOKEN_EXPIRED, AuditAction.TOKEN_REFUSED]
    token = ApiToken.objects.get()
    assert token.revoked_reason == "expired" and token.revoked_at is not None


def test_it_expires_a_human_token_left_idle(api, coordinator_a, settings):
    settings.API_TOKEN_IDLE_SECONDS = 900
    issued = _issue(api)
    assert _get(api, issued["token"]).status_code == 200
    _age(issued["id"], last_used_at=timezone.now() - dt.timedelta(seconds=901))

    response = _get(api, issued["token"])

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Token expired after 15 minutes without use."
    event = AuditEvent.objects.filter(action=AuditAction.TOKEN_EXPIRED).get()
    assert event.changes["reason"] == "idle"


def test_it_keeps_a_token_alive_while_it_is_used(api, coordinator_a, settings):
    settings.API_TOKEN_IDLE_SECONDS = 900
    issued = _issue(api)
    _age(issued["id"], last_used_at=timezone.now() - dt.timedelta(seconds=800))
    assert _get(api, issued["token"]).status_code == 200
    assert ApiToken.objects.get().last_used_at > timezone.now() - dt.timedelta(seconds=5)


def test_it_does_not_idle_out_a_scanner_token(api, imaging_a, settings):
    settings.API_TOKEN_IDLE_SECONDS = 900
    key = api(imaging_a).post(TOKENS_URL, {"name": "MPI bridge", "scope": "scanner"}, format="json").json()["token"]
    ApiToken.objects.update(last_used_at=timezone.now() - dt.timedelta(days=3))
    assert api().options("/api/v1/uploads/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 204


# --------------------------------------------------------------------------- listing and revocation


def test_it_lists_the_owners_tokens_without_keys(api, coordinator_a, coordinator_b):
    mine = _issue(api, name="laptop")
    _issue(api, username="coordinator_b")

    response = api(coordinator_a).get(TOKENS_URL)

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["id"] for row in rows] == [mine["id"]]
    assert set(rows[0]) == {
        "id",
        "user",
        "name",
        "scope",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
        "state",
    }
    assert rows[0]["state"] == "active" and rows[0]["name"] == "laptop"
    assert mine["token"] not in response.content.decode()


def test_it_lets_the_owner_revoke_a_token(api, coordinator_a):
    issued = _issue(api)
    response = api().delete(f"{TOKENS_URL}{issued['id']}/", HTTP_AUTHORIZATION=f"Token {issued['token']}")

    assert response.status_code == 204
    assert _get(api, issued["token"]).status_code == 401
    token = ApiToken.objects.get()
    assert (token.revoked_by, token.revoked_reason) == (coordinator_a, "owner")
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED)
    assert (event.actor, event.object_id) == (coordinator_a, str(token.pk))


def test_it_validates_ownership(api, coordinator_a, coordinator_b):
    issued = _issue(api)
    before = AuditEvent.objects.count()

    response = api(coordinator_b).delete(f"{TOKENS_URL}{issued['id']}/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert ApiToken.objects.get().revoked_at is None
    assert AuditEvent.objects.count() == before
    assert _get(api, issued["token"]).status_code == 200


def test_it_lets_an_administrator_list_and_revoke_anyones_tokens(api, coordinator_a, coordinator_b):
    admin = f.UserFactory(username="admin", is_superuser=True, is_staff=True)
    a, b = _issue(api), _issue(api, username="coordinator_b")

    listed = api(admin).get(TOKENS_URL, {"user": coordinator_b.pk}).json()["results"]
    assert [row["id"] for row in listed] == [b["id"]]
    assert {row["id"] for row in api(admin).get(TOKENS_URL).json()["results"]} == {a["id"], b["id"]}

    assert api(admin).delete(f"{TOKENS_URL}{b['id']}/").status_code == 204
    assert _get(api, b["token"]).status_code == 401
    assert _get(api, a["token"]).status_code == 200
    assert ApiToken.objects.get(pk=b["id"]).revoked_reason == "administrator"


def test_it_revokes_the_presenting_token_on_logout(api, coordinator_a):
    this, other = _issue(api), _issue(api)

    response = api().post(LOGOUT_URL, HTTP_AUTHORIZATION=f"Token {this['token']}")

    assert response.status_code == 204
    assert _get(api, this["token"]).status_code == 401
    assert _get(api, other["token"]).status_code == 200
    assert ApiToken.objects.get(pk=this["id"]).revoked_reason == "logout"


def test_it_revokes_every_token_of_the_user_on_logout_all(api, coordinator_a):
    this, other = _issue(api), _issue(api)
    response = api().post(LOGOUT_URL, {"all": True}, format="json", HTTP_AUTHORIZATION=f"Token {this['token']}")
    assert response.status_code == 204
    assert _get(api, this["token"]).status_code == 401
    assert _get(api, other["token"]).status_code == 401


def test_it_invalidates_tokens_when_the_password_changes(api, coordinator_a):
    issued = _issue(api)
    coordinator_a.set_password("a-brand-new-passphrase-2026")
    coordinator_a.save()

    response = _get(api, issued["token"])

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Token revoked: the password was changed."
    token = ApiToken.objects.get()
    assert token.revoked_reason == "password_changed"
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED)
    assert event.changes["reason"] == "password_changed"


def test_it_lists_a_token_of_a_changed_password_as_not_active(api, coordinator_a):
    _issue(api)
    coordinator_a.set_password("a-brand-new-passphrase-2026")
    coordinator_a.save()
    assert api(coordinator_a).get(TOKENS_URL).json()["results"][0]["state"] == "password_changed"


# --------------------------------------------------------------------------- scoped tokens


def _scoped(api, user, scope, name="bridge"):
    response = api(user).post(TOKENS_URL, {"name": name, "scope": scope}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_it_lets_imaging_staff_issue_a_scanner_token_for_uploads_only(api, imaging_a):
    issued = _scoped(api, imaging_a, "scanner")
    auth = {"HTTP_AUTHORIZATION": f"Token {issued['token']}"}
    assert ApiToken.objects.get(pk=issued["id"]).scope == "scanner"

    refused = api().get("/api/v1/subjects/", **auth)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "scanner" in refused.json()["error"]["message"]
    assert AuditEvent.objects.last().action == AuditAction.TOKEN_REFUSED

    assert api().options("/api/v1/uploads/", HTTP_TUS_RESUMABLE="1.0.0", **auth).status_code == 204
    reached = api().post("/api/v1/uploads/", HTTP_TUS_RESUMABLE="1.0.0", HTTP_UPLOAD_LENGTH="10", **auth)
    assert reached.status_code == 400 and reached.json()["error"]["code"] == "missing_metadata"
    # A scoped token cannot mint further tokens.
    assert api().post(TOKENS_URL, {"name": "x", "scope": "scanner"}, format="json", **auth).status_code == 403


def test_it_refuses_a_scanner_token_to_a_coordinator(api, coordinator_a):
    before = AuditEvent.objects.count()
    response = api(coordinator_a).post(TOKENS_URL, {"name": "bridge", "scope": "scanner"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_not_allowed"
    assert not ApiToken.objects.exists() and AuditEvent.objects.count() == before


def test_it_issues_full_tokens_only_for_credentials(api, coordinator_a):
    response = api(coordinator_a).post(TOKENS_URL, {"name": "x", "scope": "full"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"scope"}
    assert not ApiToken.objects.exists()


def test_it_limits_a_read_token_to_reading(api, coordinator_a, site_a):
    issued = _scoped(api, coordinator_a, "read", name="dashboard")
    auth = {"HTTP_AUTHORIZATION": f"Token {issued['token']}"}
    assert api().get("/api/v1/sites/", **auth).status_code == 200
    refused = api().post("/api/v1/subjects/", {"code": "X"}, format="json", **auth)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "scope": "read"},
        {"name": "x", "scope": "root"},
        {"name": "x", "scope": "read", "expires_in_days": 100_000},
    ],
)
def test_it_refuses_bad_token_requests_with_field_errors(api, coordinator_a, body):
    response = api(coordinator_a).post(TOKENS_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert not ApiToken.objects.exists()


def test_every_api_view_checks_the_token_scope():
    """Default-deny for scoped tokens holds only while no view drops the scope check."""
    from django.urls import get_resolver
    from rest_framework.views import APIView

    from compliance.permissions import TokenScopePermission

    def walk(patterns, prefix=""):
        for p in patterns:
            if hasattr(p, "url_patterns"):
                yield from walk(p.url_patterns, prefix + str(p.pattern))
            else:
                yield prefix + str(p.pattern), p.callback

    unchecked = []
    for route, callback in walk(get_resolver().url_patterns):
        view = getattr(callback, "cls", None)
        if view is None or not issubclass(view, APIView) or not route.startswith("api/v1/"):
            continue
        if view.authentication_classes and TokenScopePermission not in view.permission_classes:
            unchecked.append(route)
    assert unchecked == []


# --------------------------------------------------------------------------- sweep and admin site


def test_it_sweeps_ended_tokens_and_audits_each_once(api, coordinator_a, imaging_a):
    from django.core.management import call_command

    idle, live = _issue(api), _issue(api)
    scanner = _scoped(api, imaging_a, "scanner")
    _age(idle["id"], last_used_at=timezone.now() - dt.timedelta(days=1))
    _age(scanner["id"], last_used_at=timezone.now() - dt.timedelta(days=1))

    call_command("expire_api_tokens")
    call_command("expire_api_tokens")

    assert ApiToken.objects.get(pk=idle["id"]).revoked_reason == "idle"
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 2
    assert list(AuditEvent.objects.filter(action=AuditAction.TOKEN_EXPIRED).values_list("object_id", flat=True)) == [
        str(idle["id"])
    ]
    assert _get(api, live["token"]).status_code == 200


def test_beat_runs_the_sweep_and_the_task_ends_an_idle_token(api, coordinator_a, settings):
    from compliance.tasks import expire_api_tokens

    assert any(entry["task"] == "compliance.expire_api_tokens" for entry in settings.CELERY_BEAT_SCHEDULE.values())
    idle = _issue(api)
    _age(idle["id"], last_used_at=timezone.now() - dt.timedelta(days=1))

    assert expire_api_tokens.apply().get() == "1 token(s) ended"
    assert ApiToken.objects.get(pk=idle["id"]).revoked_reason == "idle"
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_EXPIRED).count() == 1


def test_it_lets_a_superuser_revoke_tokens_in_the_admin_site(api, client, coordinator_a):
    admin = f.UserFactory(username="root", is_superuser=True, is_staff=True)
    issued = _issue(api)
    client.force_login(admin)

    page = client.get("/admin/compliance/apitoken/")
    assert page.status_code == 200 and issued["token"] not in page.content.decode()
    response = client.post(
        "/admin/compliance/apitoken/", {"action": "revoke_tokens", "_selected_action": [issued["id"]]}
    )

    assert response.status_code == 302
    token = ApiToken.objects.get()
    assert (token.revoked_reason, token.revoked_by) == ("administrator", admin)
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKED, actor=admin).count() == 1
    assert _get(api, issued["token"]).status_code == 401


def test_it_refuses_the_token_of_a_deactivated_user(api, coordinator_a):
    issued = _issue(api)
    coordinator_a.is_active = False
    coordinator_a.save()
    response = _get(api, issued["token"])
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."
    assert AuditEvent.objects.last().changes["reason"] == "user_inactive"


def test_it_caps_the_life_of_a_scoped_token(api, imaging_a, settings):
    settings.API_SERVICE_TOKEN_MAX_DAYS = 30
    response = api(imaging_a).post(
        TOKENS_URL, {"name": "bridge", "scope": "scanner", "expires_in_days": 31}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "token_lifetime_too_long"
    assert set(response.json()["error"]["fields"]) == {"expires_in_days"}
    assert not ApiToken.objects.exists()
    ok = api(imaging_a).post(TOKENS_URL, {"name": "bridge", "scope": "scanner", "expires_in_days": 30}, format="json")
    assert ok.status_code == 201
    token = ApiToken.objects.get()
    assert token.expires_at - token.created_at == dt.timedelta(days=30)


def test_it_keeps_identity_from_a_read_token(api, coordinator_a, site_a):
    subject = f.SubjectFactory(site=site_a)
    f.SubjectIdentityFactory(subject=subject)
    issued = _scoped(api, coordinator_a, "read", name="dashboard")

    response = api().get(f"/api/v1/subjects/{subject.pk}/identity/", HTTP_AUTHORIZATION=f"Token {issued['token']}")

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.IDENTITY_READ).exists()


def test_it_lets_only_an_administrator_issue_a_token_for_another_user(api, coordinator_a, imaging_a):
    refused = api(coordinator_a).post(TOKENS_URL, {"name": "x", "scope": "read", "user": imaging_a.pk}, format="json")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert not ApiToken.objects.exists()

    admin = f.UserFactory(username="root", is_superuser=True, is_staff=True)
    issued = api(admin).post(TOKENS_URL, {"name": "bridge", "scope": "scanner", "user": imaging_a.pk}, format="json")
    assert issued.status_code == 201
    token = ApiToken.objects.get()
    assert (token.user, token.created_by, token.scope) == (imaging_a, admin, "scanner")
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_ISSUED)
    assert (event.actor, event.changes["user"]) == (admin, "imaging_a")
