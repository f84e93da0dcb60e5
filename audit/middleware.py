from __future__ import annotations

import re
import time
import uuid

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.urls import reverse

from compliance import twofactor
from compliance.context import request_context
from compliance.security import client_address

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    """Give every request an id (or keep a sane one sent as X-Request-ID) and note the
    client address, so each audit event says where the action came from."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        sent = request.headers.get("X-Request-ID", "")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        # REMOTE_ADDR, or the address trusted proxies forwarded (TRUSTED_PROXY_COUNT): never
        # a header the client alone wrote.
        with request_context(request_id=request_id, client_address=client_address(request)):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


_LAST_ACTIVITY = "compliance_last_activity"
# Pages a user who has not passed the second factor may still reach.
_TWO_FACTOR_EXEMPT = ("/accounts/", "/static/", "/api/v1/auth/token/")


def _wants_json(request) -> bool:
    return request.path.startswith("/api/")


class IdleTimeoutMiddleware:
    """HIPAA 164.312(a)(2)(iii) automatic log-off: a session idle for longer than
    ``SESSION_IDLE_TIMEOUT_SECONDS`` is logged off, and the log-off is audited
    (LOGOUT, reason idle) before the request is answered."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        if session is not None and user is not None and user.is_authenticated:
            now = time.time()
            last = session.get(_LAST_ACTIVITY)
            if last is not None and now - float(last) > settings.SESSION_IDLE_TIMEOUT_SECONDS:
                request.compliance_logout_reason = "idle"  # read by compliance.security.on_logged_out
                logout(request)
                if _wants_json(request):
                    return JsonResponse(
                        {
                            "error": {
                                "code": "session_expired",
                                "message": "You were logged off after a period of inactivity.",
                            }
                        },
                        status=401,
                    )
                return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
            session[_LAST_ACTIVITY] = now
        return self.get_response(request)


class TwoFactorRequiredMiddleware:
    """Hold a browser session of a PHI role at the one-time-password step until it is
    verified (django-otp's ``is_verified``), when ``REQUIRE_2FA`` is on. API tokens are
    checked when they are issued (``compliance.twofactor.require_token_otp``)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (
            settings.REQUIRE_2FA
            and user is not None
            and user.is_authenticated
            and not request.path.startswith(_TWO_FACTOR_EXEMPT)
            and not user.is_verified()
            and twofactor.requires_2fa(user)
        ):
            if _wants_json(request):
                return JsonResponse(
                    {"error": {"code": "two_factor_required", "message": "Complete two-factor authentication first."}},
                    status=403,
                )
            return redirect_to_login(request.get_full_path(), reverse("accounts:otp"))
        return self.get_response(request)
