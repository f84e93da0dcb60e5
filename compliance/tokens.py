"""API tokens: issue, authenticate, revoke, expire, and the scope rule.

A key is ``<prefix>.<secret>`` and is shown once, when issued. The row keeps the prefix
(to find it) and the SHA-256 of the secret (compared in constant time), never the key.
A token ends, and the end is audited in the same transaction that records it, when:

- its owner or an administrator revokes it, or its client logs out with it;
- its absolute lifetime runs out (``API_TOKEN_TTL_SECONDS`` for a person's token; the
  issuer's choice, at most ``API_SERVICE_TOKEN_MAX_DAYS``, for a scoped token);
- a person's (``full``) token goes unused for ``API_TOKEN_IDLE_SECONDS`` (HIPAA
  164.312(a)(2)(iii) automatic log-off, as for browser sessions);
- the owner's password changes (the token carries a stamp of the password it was
  issued under).

Expiry and password changes are noticed when the token is next presented (or by
``manage.py expire_api_tokens``); every refused presentation is audited too.

Scopes: ``full`` reaches what the user may reach; ``scanner`` only views that list it in
their ``token_scopes`` (the upload endpoints); ``read`` only safe methods of views that
list it (the site-scoped read endpoints). ``compliance.permissions.TokenScopePermission``
applies ``scope_allows`` to every API view.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.permissions import SAFE_METHODS

from audit.actions import AuditAction
from audit.chain import record_event
from compliance import twofactor
from compliance.models import ApiToken, TokenEnd, TokenScope
from config.errors import RuleViolation

KEY_SEPARATOR = "."
_PREFIX = re.compile(r"^[0-9a-f]{12}$")
_OBJECT_TYPE = "compliance.apitoken"
# last_used_at is written at most this often per token (a write per request would make
# every read a write); a token may idle out up to this much early, never late.
_TOUCH_EVERY = dt.timedelta(seconds=30)
_EXPIRY_ENDS = (TokenEnd.EXPIRED, TokenEnd.IDLE)


class TokenRefused(Exception):
    """A presented key that does not authenticate; ``message`` is safe to show."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    key: str  # the only time the plain key exists outside the client


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def password_stamp(user) -> str:
    """A fingerprint of the user's current password hash: changes whenever the password does."""
    return hashlib.sha256(f"compliance.apitoken:{user.password}".encode()).hexdigest()


def _idle_limit() -> dt.timedelta:
    return dt.timedelta(seconds=settings.API_TOKEN_IDLE_SECONDS)


def _describe(token: ApiToken, **extra) -> dict:
    return {
        "user": token.user.get_username(),
        "name": token.name,
        "scope": token.scope,
        "prefix": token.prefix,
        **extra,
    }


# --------------------------------------------------------------------------- issue


def token_issue(
    *, user, name: str, scope: str = TokenScope.FULL, actor=None, lifetime: dt.timedelta | None = None
) -> IssuedToken:
    """Issue a new token of ``user`` for the client ``name``; the key is returned once."""
    now = timezone.now()
    if lifetime is None:
        lifetime = (
            dt.timedelta(seconds=settings.API_TOKEN_TTL_SECONDS)
            if scope == TokenScope.FULL
            else dt.timedelta(days=settings.API_SERVICE_TOKEN_MAX_DAYS)
        )
    prefix = secrets.token_hex(6)
    while ApiToken.objects.filter(prefix=prefix).exists():  # 48 random bits: practically never
        prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        user=user,
        name=name,
        scope=scope,
        prefix=prefix,
        secret_hash=_digest(secret),
        password_stamp=password_stamp(user),
        created_at=now,
        created_by=actor or user,
        expires_at=now + lifetime,
    )
    with transaction.atomic():
        token.full_clean()
        token.save()
        record_event(
            actor=actor or user,
            action=AuditAction.TOKEN_ISSUED,
            object_type=_OBJECT_TYPE,
            object_id=token.pk,
            changes=_describe(token, expires_at=token.expires_at),
        )
    return IssuedToken(token=token, key=f"{prefix}{KEY_SEPARATOR}{secret}")


def scoped_token_issue(*, actor, user, name: str, scope: str, expires_in_days: int | None = None) -> IssuedToken:
    """A ``scanner`` or ``read`` token for a bridge or an integration.

    Scanner tokens go to imaging staff (or are issued by an administrator); only an
    administrator issues a token for another user. Tokens with every right of a person
    (``full``) come only from their credentials (and second factor) at the token endpoint.
    """
    from trials.models import Role  # trials imports compliance: keep this import late
    from trials.permissions import access

    if scope not in (TokenScope.SCANNER, TokenScope.READ):
        raise RuleViolation(
            "scope_not_issuable",
            f"Scope {scope!r} cannot be issued here: full tokens come from /api/v1/auth/token/ with your credentials.",
            field="scope",
        )
    if user.pk != actor.pk and not actor.is_superuser:
        raise RuleViolation("scope_not_allowed", "Only an administrator issues tokens for another user.", field="user")
    if scope == TokenScope.SCANNER and not (
        user.is_superuser or access.active_memberships(user).filter(role=Role.IMAGING_STAFF).exists()
    ):
        raise RuleViolation("scope_not_allowed", "Scanner tokens are issued to site imaging staff only.", field="scope")
    days = settings.API_SERVICE_TOKEN_MAX_DAYS if expires_in_days is None else expires_in_days
    if not 1 <= days <= settings.API_SERVICE_TOKEN_MAX_DAYS:
        raise RuleViolation(
            "token_lifetime_too_long",
            f"expires_in_days must be 1 to {settings.API_SERVICE_TOKEN_MAX_DAYS}, got {days}.",
            field="expires_in_days",
        )
    return token_issue(user=user, name=name, scope=scope, actor=actor, lifetime=dt.timedelta(days=days))


# --------------------------------------------------------------------------- state


def token_end_reason(token: ApiToken, *, now: dt.datetime | None = None) -> str | None:
    """Why ``token`` no longer works (a ``TokenEnd`` value), or None while it does."""
    now = now or timezone.now()
    if token.revoked_at is not None:
        return token.revoked_reason
    if now >= token.expires_at:
        return TokenEnd.EXPIRED
    if token.scope == TokenScope.FULL and now - (token.last_used_at or token.created_at) >= _idle_limit():
        return TokenEnd.IDLE
    if not hmac.compare_digest(token.password_stamp, password_stamp(token.user)):
        return TokenEnd.PASSWORD_CHANGED
    return None


def token_state(token: ApiToken) -> str:
    return token_end_reason(token) or "active"


def _refusal_message(reason: str) -> str:
    if reason == TokenEnd.EXPIRED:
        return "Token expired."
    if reason == TokenEnd.IDLE:
        seconds = settings.API_TOKEN_IDLE_SECONDS
        span = f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"
        return f"Token expired after {span} without use."
    if reason == TokenEnd.PASSWORD_CHANGED:
        return "Token revoked: the password was changed."
    if reason == TokenEnd.LOGOUT:
        return "Token revoked at log-out."
    return "Token revoked."


def _end(token: ApiToken, reason: str, *, actor=None, now: dt.datetime | None = None) -> bool:
    """Mark ``token`` ended and audit it, unless something already ended it (no event then)."""
    now = now or timezone.now()
    with transaction.atomic():
        ended = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_reason=reason, revoked_by=actor
        )
        if ended:
            action = AuditAction.TOKEN_EXPIRED if reason in _EXPIRY_ENDS else AuditAction.TOKEN_REVOKED
            record_event(
                actor=actor,
                action=action,
                object_type=_OBJECT_TYPE,
                object_id=token.pk,
                changes=_describe(token, reason=reason),
            )
    if ended:
        token.revoked_at, token.revoked_reason, token.revoked_by = now, reason, actor
    return bool(ended)


def _refused(reason: str, token: ApiToken | None = None, **extra) -> None:
    with transaction.atomic():
        record_event(
            actor=None,
            action=AuditAction.TOKEN_REFUSED,
            object_type=_OBJECT_TYPE,
            object_id=token.pk if token else "",
            changes={**(_describe(token) if token else {}), "reason": reason, **extra},
        )


# --------------------------------------------------------------------------- use


def token_authenticate(key: str):
    """``(user, token)`` for a presented key, or ``TokenRefused`` (audited)."""
    prefix, _, secret = key.partition(KEY_SEPARATOR)
    token = None
    if _PREFIX.match(prefix) and secret:
        token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    # Compared even without a row, so a miss and a wrong secret take the same time.
    matches = hmac.compare_digest(_digest(secret), token.secret_hash if token else "0" * 64)
    if token is None or not matches:
        _refused("invalid", prefix=prefix if _PREFIX.match(prefix) else "")
        raise TokenRefused("Invalid token.")
    now = timezone.now()
    reason = token_end_reason(token, now=now)
    if reason is not None:
        if not _end(token, reason, now=now):
            _refused(reason, token)
        raise TokenRefused(_refusal_message(reason))
    if not token.user.is_active:
        _refused("user_inactive", token)
        raise TokenRefused("User inactive or deleted.")
    # A PHI role's token stops working once the role has no confirmed second factor.
    if twofactor.requires_2fa(token.user) and not twofactor.has_confirmed_device(token.user):
        _refused("two_factor_required", token)
        raise TokenRefused("Two-factor authentication is required for your role.")
    if token.last_used_at is None or now - token.last_used_at >= _TOUCH_EVERY:
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - _TOUCH_EVERY)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token.user, token


def scope_allows(scope: str, *, view_scopes, method: str) -> bool:
    """Whether a token of ``scope`` may call a view admitting ``view_scopes`` with ``method``."""
    if scope == TokenScope.FULL:
        return True
    if scope not in view_scopes:
        return False
    return scope != TokenScope.READ or method in SAFE_METHODS


def token_scope_refused(token: ApiToken, *, method: str, path: str) -> None:
    """Audit a call outside the token's scope (the caller answers 403)."""
    _refused("scope", token, method=method, path=path[:200])


# --------------------------------------------------------------------------- revoke


def tokens_visible_to(user, *, owner_id=None):
    """The tokens ``user`` may list and revoke: their own; an administrator's, everyone's."""
    tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
    if not user.is_superuser:
        return tokens.filter(user=user)
    return tokens.filter(user_id=owner_id) if owner_id is not None else tokens


def token_revoke(*, actor, token: ApiToken, reason: str | None = None) -> ApiToken:
    """Revoke ``token`` (its owner, or an administrator); revoking an ended token changes nothing."""
    if token.user_id != actor.pk and not actor.is_superuser:
        raise RuleViolation("not_found", "Not found.")
    if reason is None:
        reason = TokenEnd.OWNER if token.user_id == actor.pk else TokenEnd.ADMINISTRATOR
    _end(token, reason, actor=actor)
    return token


def tokens_revoke_all(*, actor, user, reason: str = TokenEnd.OWNER) -> int:
    """Revoke every token of ``user`` still in force; the number revoked."""
    if user.pk != actor.pk and not actor.is_superuser:
        raise RuleViolation("not_found", "Not found.")
    tokens = ApiToken.objects.select_related("user").filter(user=user, revoked_at__isnull=True)
    return sum(_end(token, reason, actor=actor) for token in tokens)


def tokens_expire_due(*, now: dt.datetime | None = None) -> int:
    """End (and audit) every token whose lifetime, idle time or password has run out."""
    now = now or timezone.now()
    ended = 0
    for token in ApiToken.objects.select_related("user").filter(revoked_at__isnull=True).iterator():
        reason = token_end_reason(token, now=now)
        if reason is not None:
            ended += _end(token, reason, now=now)
    return ended


def auth_token_issue(*, request, username: str, password: str, otp: str = "", name: str = "API client") -> IssuedToken:
    """Exchange credentials (and, for roles that read PHI, a TOTP code) for a new API
    token of the client ``name`` (scope ``full``).

    Failed attempts are audited (LOGIN_FAILED, then ACCOUNT_LOCKED) and counted towards
    the lockout by compliance's receivers of Django's and django-axes' signals, so the
    login form and this endpoint share one count.
    """
    # django-axes reads and flags the HttpRequest, not DRF's wrapper around it.
    user = authenticate(getattr(request, "_request", request), username=username, password=password)
    if user is None or not user.is_active:
        raise RuleViolation("invalid_credentials", "Unable to log in with the credentials given.")
    twofactor.require_token_otp(user, otp)
    return token_issue(user=user, name=name)
