"""Asking a known user for their password again, outside sign-in: an e-signature
(21 CFR 11.200), an injection's second person. One home, so every such check is counted
and audited exactly like a sign-in.

The check goes through Django's ``authenticate``, the same path as the login form and
the API token endpoint: django-axes refuses a locked-out (username, address) before the
password is looked at, a wrong password sends ``user_login_failed``, which axes counts
toward the same lockout and ``audit.security`` audits (LOGIN_FAILED, ``via`` naming
where). It runs on a request of its own, carrying the caller's client address from the
request context: the caller's HTTP request is not flagged as locked out (axes' middleware
would turn the whole answer into a sign-in lockout page), and services need no request.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import authenticate
from django.http import HttpRequest

from audit import context
from audit.security import lockout_refusal, lockout_scope

# Where a password was asked for, as LOGIN_FAILED's "via" and axes' path_info say it.
E_SIGNATURE = "e_signature"
INJECTION_VERIFIER = "injection_verifier"


@dataclass(frozen=True)
class PasswordCheck:
    confirmed: bool
    locked: bool = False
    code: str = ""  # "account_locked" / "address_throttled" when locked
    message: str = ""


def _request_for(via: str) -> HttpRequest:
    request = HttpRequest()
    request.method = "POST"
    request.path = request.path_info = f"<{via}>"
    request.compliance_via = via  # type: ignore[attr-defined]  # read back with getattr by the audit context
    address = context.current().client_address
    if address:
        # Already resolved (proxies included) by the middleware; no X-Forwarded-For here,
        # so audit.security.client_address reads it back unchanged.
        request.META["REMOTE_ADDR"] = address
    return request


def password_check(*, user, password: str, via: str) -> PasswordCheck:
    """Is ``password`` the password of ``user``, who is active and not locked out?

    A wrong password is counted toward ``user``'s lockout and audited as LOGIN_FAILED;
    once the limit is reached even the right password is refused (``locked``).
    """
    request = _request_for(via)
    authenticated = authenticate(request, username=user.get_username(), password=password or "")
    if authenticated is not None and authenticated.pk == user.pk:
        return PasswordCheck(confirmed=True)
    if getattr(request, "axes_locked_out", False):
        code, message = lockout_refusal(lockout_scope(request))
        return PasswordCheck(confirmed=False, locked=True, code=code, message=message)
    return PasswordCheck(confirmed=False)
