from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import authentication, exceptions

from compliance import tokens


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <key>`` against ``compliance.models.ApiToken``
    (``compliance.tokens.token_authenticate``: hashed keys, expiry, idle expiry, revocation,
    password changes, and the second factor of PHI roles).

    Listed first among the authentication classes, so its ``WWW-Authenticate: Token``
    makes a missing or refused credential a 401, not a 403."""

    keyword = "Token"

    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        try:
            # A malformed header is refused (and audited) like a wrong key.
            key = parts[1].decode() if len(parts) == 2 else ""
        except UnicodeError:
            key = ""
        try:
            return tokens.token_authenticate(key)
        except tokens.TokenRefused as refused:
            raise exceptions.AuthenticationFailed(refused.message) from None

    def authenticate_header(self, request):
        return self.keyword


class TokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of ``TokenAuthentication``: ``Authorization: Token <key>``."""

    target_class = "compliance.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")  # noqa: S106 - a scheme name
