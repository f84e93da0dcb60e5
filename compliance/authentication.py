from __future__ import annotations

from rest_framework import authentication, exceptions

from compliance import twofactor


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF token authentication that stops honouring the token of a PHI role that has no
    confirmed TOTP device (removed after the token was issued, or 2FA switched on since)."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if twofactor.requires_2fa(user) and not twofactor.has_confirmed_device(user):
            raise exceptions.AuthenticationFailed("Two-factor authentication is required for your role.")
        return user, token
