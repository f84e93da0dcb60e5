"""Audit of sign-in events, and the lockout answer.

Django and django-axes announce logins, failures, log-offs and lockouts only through
signals, so these receivers are the one place that turns them into audit events
(connected in ``ComplianceConfig.ready``). Each writes in its own transaction: a failed
login is a fact to keep even though the request that caused it fails.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import render

from compliance.actions import AuditAction
from compliance.audit import record_event

TOKEN_PATH = "/api/v1/auth/token/"


def _via(request) -> str:
    path = getattr(request, "path", "") or ""
    if path.startswith(TOKEN_PATH):
        return "api_token"
    if path.startswith("/admin/"):
        return "admin"
    return "login_form" if request is not None else "other"


def on_login_failed(sender, credentials, request=None, **kwargs):
    with transaction.atomic():
        record_event(actor=None, action=AuditAction.LOGIN_FAILED, object_type="auth.user", object_id="",
                     changes={"username": str(credentials.get("username", ""))[:150], "via": _via(request)})


def on_logged_in(sender, request, user, **kwargs):
    with transaction.atomic():
        record_event(actor=user, action=AuditAction.LOGIN_SUCCEEDED, object_type="auth.user", object_id=user.pk,
                     changes={"via": _via(request)})


def on_logged_out(sender, request, user, **kwargs):
    if user is None:
        return
    reason = getattr(request, "compliance_logout_reason", "user")
    with transaction.atomic():
        record_event(actor=user, action=AuditAction.LOGOUT, object_type="auth.user", object_id=user.pk,
                     changes={"reason": reason}, reason="automatic log-off after idle time" if reason == "idle" else "")


def on_locked_out(sender, request=None, username=None, ip_address=None, **kwargs):
    with transaction.atomic():
        record_event(actor=None, action=AuditAction.ACCOUNT_LOCKED, object_type="auth.user", object_id="",
                     changes={"username": str(username or "")[:150], "via": _via(request),
                              "failure_limit": settings.AXES_FAILURE_LIMIT,
                              "cooloff_minutes": round(settings.AXES_COOLOFF_TIME * 60)})


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out attempt: JSON for the API, a page otherwise."""
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    message = f"Too many failed sign-in attempts: this account is locked for {minutes} minutes."
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "account_locked", "message": message}}, status=429)
    return render(request, "registration/locked.html", {"message": message, "minutes": minutes}, status=429)
