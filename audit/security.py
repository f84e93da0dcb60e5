"""Audit of sign-in events, the lockout's counting and its answer, and the client address.

Django and django-axes announce logins, failures, log-offs and lockouts only through
signals, so these receivers are the one place that turns them into audit events
(connected in ``AuditConfig.ready``). Each writes in its own transaction: a failed
login is a fact to keep even though the request that caused it fails.
"""

from __future__ import annotations

import ipaddress

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.http import JsonResponse
from django.shortcuts import render

from audit.actions import AuditAction
from audit.chain import record_event

TOKEN_PATH = "/api/v1/auth/token/"  # noqa: S105 - a URL path, not a secret

# Which limit refused a request: the (username, address) count or the per-address throttle.
ACCOUNT = "account"
ADDRESS = "address"


def client_address(request) -> str | None:
    """The address of the client behind ``request``, as the lockout counts it and the audit
    trail records it (``AXES_CLIENT_IP_CALLABLE`` and the request-context middleware).

    REMOTE_ADDR, unless ``TRUSTED_PROXY_COUNT`` reverse proxies stand in front: each appends
    the address it received from to X-Forwarded-For, so the entry that many places from the
    right was written by the outermost trusted proxy, and everything left of it by the
    client. A header too short or not an address falls back to REMOTE_ADDR (the proxy),
    which errs towards counting more failures together, never towards a client's choice.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if len(forwarded) < proxies:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-proxies]))
    except ValueError:
        return remote


class LockoutHandler(AxesDatabaseHandler):
    """django-axes' database handler, plus a throttle per client address.

    Axes locks a (username, address) pair at ``AXES_FAILURE_LIMIT`` (``AXES_LOCKOUT_PARAMETERS``);
    it has one limit only, so the second, higher one for an address across all usernames
    (password spraying from one place) is counted here, over the same AccessAttempt rows.
    """

    def address_failures(self, request) -> int:
        address = getattr(request, "axes_ip_address", None)
        if not address:
            return 0
        recent = AccessAttempt.objects.filter(ip_address=address, attempt_time__gte=get_cool_off_threshold(request))
        return recent.aggregate(n=Sum("failures_since_start"))["n"] or 0

    def _address_throttled(self, request) -> bool:
        limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT
        # django-axes' own default (True) when the project leaves it unset.
        return getattr(settings, "AXES_LOCK_OUT_AT_FAILURE", True) and self.address_failures(request) >= limit

    def is_locked(self, request, credentials=None) -> bool:
        if super().is_locked(request, credentials):
            request.compliance_lockout_scope = ACCOUNT
            return True
        if self._address_throttled(request):
            request.compliance_lockout_scope = ADDRESS
            return True
        return False

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        if request is not None:
            request.compliance_lockout_scope = ACCOUNT
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or request.axes_locked_out or self.is_whitelisted(request, credentials):
            return
        if self._address_throttled(request):
            request.compliance_lockout_scope = ADDRESS
            request.axes_locked_out = True
            request.axes_credentials = credentials
            user_locked_out.send(
                "axes",
                request=request,
                username=get_client_username(request, credentials),
                ip_address=request.axes_ip_address,
            )


def lockout_scope(request) -> str:
    return getattr(request, "compliance_lockout_scope", ACCOUNT)


def lockout_refusal(scope: str) -> tuple[str, str]:
    """(code, message) for a refused attempt: one wording for every interface."""
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    if scope == ADDRESS:
        return (
            "address_throttled",
            f"Too many failed sign-in attempts from your network address: attempts from it "
            f"are refused for {minutes} minutes.",
        )
    return (
        "account_locked",
        f"Too many failed sign-in attempts: this account is locked for {minutes} minutes at your network address.",
    )


def _via(request) -> str:
    if getattr(request, "compliance_via", None):
        return request.compliance_via
    path = getattr(request, "path", "") or ""
    if path.startswith(TOKEN_PATH):
        return "api_token"
    if path.startswith("/admin/"):
        return "admin"
    return "login_form" if request is not None else "other"


def on_login_failed(sender, credentials, request=None, **kwargs):
    with transaction.atomic():
        record_event(
            actor=None,
            action=AuditAction.LOGIN_FAILED,
            object_type="auth.user",
            object_id="",
            changes={"username": str(credentials.get("username", ""))[:150], "via": _via(request)},
        )


def on_logged_in(sender, request, user, **kwargs):
    with transaction.atomic():
        record_event(
            actor=user,
            action=AuditAction.LOGIN_SUCCEEDED,
            object_type="auth.user",
            object_id=user.pk,
            changes={"via": _via(request)},
        )


def on_logged_out(sender, request, user, **kwargs):
    if user is None:
        return
    reason = getattr(request, "compliance_logout_reason", "user")
    with transaction.atomic():
        record_event(
            actor=user,
            action=AuditAction.LOGOUT,
            object_type="auth.user",
            object_id=user.pk,
            changes={"reason": reason},
            reason="automatic log-off after idle time" if reason == "idle" else "",
        )


def on_locked_out(sender, request=None, username=None, ip_address=None, **kwargs):
    scope = lockout_scope(request)
    limit = settings.LOGIN_ADDRESS_FAILURE_LIMIT if scope == ADDRESS else settings.AXES_FAILURE_LIMIT
    with transaction.atomic():
        record_event(
            actor=None,
            action=AuditAction.ACCOUNT_LOCKED,
            object_type="auth.user",
            object_id="",
            changes={
                "username": str(username or "")[:150],
                "via": _via(request),
                "scope": scope,
                "failure_limit": limit,
                "cooloff_minutes": round(settings.AXES_COOLOFF_TIME * 60),
            },
        )


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out attempt: JSON for the API, a page otherwise."""
    code, message = lockout_refusal(lockout_scope(request))
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": code, "message": message}}, status=429)
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    return render(request, "registration/locked.html", {"message": message, "minutes": minutes}, status=429)


def lockout_release(*, actor, attempts, reason: str = "") -> int:
    """Release the lockouts counted in ``attempts`` (a queryset of axes' AccessAttempt):
    the rows go, and each (username, address) released is an ACCOUNT_UNLOCKED event with
    the failures it had, in the same transaction. ``actor`` is the administrator, or None
    from the command line. Returns how many (username, address) pairs were released."""
    with transaction.atomic():
        rows = list(attempts.select_for_update().order_by("username", "ip_address", "pk"))
        released: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row.username or "", row.ip_address or "")
            released[key] = released.get(key, 0) + row.failures_since_start
        AccessAttempt.objects.filter(pk__in=[row.pk for row in rows]).delete()
        for (username, address), failures in released.items():
            record_event(
                actor=actor,
                action=AuditAction.ACCOUNT_UNLOCKED,
                object_type="auth.user",
                object_id="",
                changes={"username": username, "ip_address": address, "failures": failures},
                reason=reason,
            )
    return len(released)
