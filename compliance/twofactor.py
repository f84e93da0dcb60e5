"""Two-factor authentication (TOTP, RFC 6238, through django-otp) for every role that may
read identifiable data: HIPAA 164.312(d) person authentication.

Browser sessions of such users are held at the OTP step until verified
(``middleware.TwoFactorRequiredMiddleware``); API tokens are issued to them only with a
valid ``otp`` (``require_token_otp``) and only honoured while they keep a confirmed
device (``authentication.TokenAuthentication``). ``settings.REQUIRE_2FA`` switches the
whole rule; it cannot be switched off in production.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_otp import match_token
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation


def reads_identifiable_data(user) -> bool:
    """Whether ``user`` holds a role that may read identity (or administers the platform)."""
    from trials.permissions import access  # trials imports compliance: keep this import late

    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    roles = {str(r) for r in access.PHI_SITE_ROLES | access.PHI_TRIAL_WIDE_ROLES}
    return access.active_memberships(user).filter(role__in=roles).exists()


def requires_2fa(user) -> bool:
    return bool(settings.REQUIRE_2FA) and reads_identifiable_data(user)


def has_confirmed_device(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def check_otp(user, otp: str, *, via: str):
    """The device that accepts ``otp``, or None (the failure is audited and committed).

    django-otp's TOTP device refuses a reused token and throttles repeated failures.
    """
    device = match_token(user, (otp or "").strip()) if otp else None
    if device is None:
        with transaction.atomic():
            record_event(
                actor=user,
                action=AuditAction.TWO_FACTOR_FAILED,
                object_type="auth.user",
                object_id=user.pk,
                changes={"via": via},
            )
    return device


def require_token_otp(user, otp: str) -> None:
    """Refuse an API token to a PHI role without a confirmed device and a valid ``otp``."""
    if not requires_2fa(user):
        return
    if not has_confirmed_device(user):
        raise RuleViolation(
            "two_factor_not_enrolled",
            "Your role reads identifiable data: enrol an authenticator (TOTP) device before requesting an API token.",
        )
    if not otp:
        raise RuleViolation("otp_required", "Give the 6-digit code of your authenticator app.", field="otp")
    if check_otp(user, otp, via="api_token") is None:
        raise RuleViolation("otp_invalid", "The authenticator code is wrong or was already used.", field="otp")


def enrol_device(*, user, actor=None, name: str = "authenticator", key: str | None = None) -> TOTPDevice:
    """Create a confirmed TOTP device for ``user`` (an administrator hands over the key)."""
    device = TOTPDevice(user=user, name=name, confirmed=True)
    if key:
        device.key = key
    with transaction.atomic():
        device.full_clean()
        device.save()
        record_event(
            actor=actor,
            action=AuditAction.TWO_FACTOR_DEVICE_ENROLLED,
            object_type="otp_totp.totpdevice",
            object_id=device.pk,
            changes={"user": user.get_username(), "name": name},
        )
    return device
