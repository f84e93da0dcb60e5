"""The lockout counts failures per (username, client address); a separate, higher limit
throttles one address across all usernames; the client address is REMOTE_ADDR unless
TRUSTED_PROXY_COUNT says how many reverse proxies wrote X-Forwarded-For."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests import factories as f
from tests.factories import PASSWORD


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 5


def _login(username, password, *, address="10.0.0.1", **headers):
    return Client(REMOTE_ADDR=address, **headers).post("/accounts/login/", {"username": username, "password": password})


def _fail(username, times, **kwargs):
    for _ in range(times):
        response = _login(username, "wrong", **kwargs)
    return response


def test_it_does_not_lock_other_users_behind_the_same_address(coordinator_a, imaging_a):
    assert _fail("coordinator_a", 3).status_code == 429
    # A colleague behind the same hospital proxy still signs in.
    response = _login("imaging_a", PASSWORD)
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_SUCCEEDED, actor=imaging_a).exists()


def test_it_does_not_let_a_stranger_lock_the_user_out_at_the_users_own_address(coordinator_a):
    assert _fail("coordinator_a", 3, address="198.51.100.7").status_code == 429
    assert _login("coordinator_a", PASSWORD, address="198.51.100.7").status_code == 429
    response = _login("coordinator_a", PASSWORD, address="10.0.0.1")
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_SUCCEEDED, actor=coordinator_a).exists()


def test_it_throttles_one_address_across_usernames_at_the_higher_limit(coordinator_a):
    # Password spraying: one failure each for five names, none of them near its own limit.
    for name in ("alice", "bob", "carol", "dave", "erin"):
        response = _login(name, "Winter2026!")
    assert response.status_code == 429
    locked = AuditEvent.objects.filter(action=AuditAction.ACCOUNT_LOCKED).get()
    assert locked.changes["scope"] == "address" and locked.changes["failure_limit"] == 5

    refused = _login("coordinator_a", PASSWORD)
    assert refused.status_code == 429 and b"address" in refused.content
    assert not AuditEvent.objects.filter(action=AuditAction.LOGIN_SUCCEEDED).exists()
    # Another address is not throttled.
    assert _login("coordinator_a", PASSWORD, address="10.0.0.2").status_code == 302


def test_it_answers_the_api_with_the_address_throttle_in_the_error_envelope(api, coordinator_a, settings):
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 2
    client = api()
    for name in ("alice", "bob"):
        response = client.post("/api/v1/auth/token/", {"username": name, "password": "x"}, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "address_throttled" and "address" in error["message"]


def test_it_ignores_x_forwarded_for_unless_a_proxy_is_trusted(coordinator_a):
    # Without TRUSTED_PROXY_COUNT a client cannot escape the count by inventing addresses.
    for n in range(3):
        response = _login("coordinator_a", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    assert response.status_code == 429
    event = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).first()
    assert event.client_address == "10.0.0.1"


def test_it_reads_the_client_address_written_by_a_trusted_proxy(coordinator_a, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # Everyone arrives from the proxy (10.0.0.1); the proxy appends the real client address.
    assert _fail("coordinator_a", 3, HTTP_X_FORWARDED_FOR="spoofed, 203.0.113.5").status_code == 429
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).first().client_address == "203.0.113.5"
    # The same user at another client address, through the same proxy, is not locked out.
    response = _login("coordinator_a", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.6")
    assert response.status_code == 302
    assert AuditEvent.objects.get(action=AuditAction.LOGIN_SUCCEEDED).client_address == "203.0.113.6"


def test_it_falls_back_to_the_proxy_address_when_the_forwarded_header_is_unusable(coordinator_a, settings):
    settings.TRUSTED_PROXY_COUNT = 2
    _login("coordinator_a", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.5")  # fewer entries than proxies
    _login("coordinator_a", "wrong", HTTP_X_FORWARDED_FOR="not-an-address, 10.9.9.9")
    addresses = set(AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED).values_list("client_address", flat=True))
    assert addresses == {"10.0.0.1"}


# --------------------------------------------------------------------------- administrators


@pytest.fixture
def administrator(db):
    return f.UserFactory(username="admin", is_staff=True, is_superuser=True)


def test_it_shows_lockouts_to_an_administrator_and_releases_them_with_an_audit_event(coordinator_a, administrator):
    from axes.models import AccessAttempt

    _fail("coordinator_a", 3)
    admin = Client()
    admin.force_login(administrator)
    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"coordinator_a" in listing.content

    attempt = AccessAttempt.objects.get(username="coordinator_a")
    response = admin.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"}
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    released = AuditEvent.objects.get(action=AuditAction.ACCOUNT_UNLOCKED)
    assert released.actor == administrator
    assert released.changes == {"username": "coordinator_a", "ip_address": "10.0.0.1", "failures": 3}
    assert _login("coordinator_a", PASSWORD).status_code == 302


def test_it_releases_one_lockout_from_its_admin_page(coordinator_a, administrator):
    from axes.models import AccessAttempt

    _fail("coordinator_a", 3)
    attempt = AccessAttempt.objects.get()
    admin = Client()
    admin.force_login(administrator)
    response = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.exists()
    assert AuditEvent.objects.get(action=AuditAction.ACCOUNT_UNLOCKED).changes["username"] == "coordinator_a"


def test_it_keeps_lockouts_from_users_who_are_not_administrators(coordinator_a, imaging_a):
    from axes.models import AccessAttempt

    _fail("coordinator_a", 3)
    client = Client()
    client.force_login(imaging_a)
    assert client.get("/admin/axes/accessattempt/").status_code == 302  # to the admin sign-in
    client.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [AccessAttempt.objects.get().pk], "post": "yes"},
    )
    assert AccessAttempt.objects.count() == 1
    assert not AuditEvent.objects.filter(action=AuditAction.ACCOUNT_UNLOCKED).exists()


def test_it_releases_a_lockout_from_the_command_line_with_an_audit_event(coordinator_a):
    from axes.models import AccessAttempt
    from django.core.management import call_command

    _fail("coordinator_a", 3)
    _fail("coordinator_a", 1, address="10.0.0.2")
    call_command("lockout_release", "coordinator_a", "--address", "10.0.0.1", "--reason", "phoned the help desk")
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["10.0.0.2"]
    released = AuditEvent.objects.get(action=AuditAction.ACCOUNT_UNLOCKED)
    assert released.actor is None and released.reason == "phoned the help desk"
    assert _login("coordinator_a", PASSWORD).status_code == 302
