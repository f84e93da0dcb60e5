"""Request context (who, from where) for the audit trail, and the automatic log-off."""

from __future__ import annotations

import re
import time
import uuid

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse

from audit.context import request_context
from audit.security import client_address

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


def wants_json(request) -> bool:
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
                request.compliance_logout_reason = "idle"  # read by audit.security.on_logged_out
                logout(request)
                if wants_json(request):
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
