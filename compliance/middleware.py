"""Two-factor authentication, held at the one-time-password step (HIPAA 164.312(d))."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.urls import reverse

from audit.middleware import wants_json
from compliance import twofactor

# Pages a user who has not passed the second factor may still reach.
_TWO_FACTOR_EXEMPT = ("/accounts/", "/static/", "/api/v1/auth/token/")


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
            if wants_json(request):
                return JsonResponse(
                    {"error": {"code": "two_factor_required", "message": "Complete two-factor authentication first."}},
                    status=403,
                )
            return redirect_to_login(request.get_full_path(), reverse("accounts:otp"))
        return self.get_response(request)
