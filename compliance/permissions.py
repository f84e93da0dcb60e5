"""DRF permissions of the compliance layer."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from compliance import tokens
from compliance.models import ApiToken


class TokenScopePermission(BasePermission):
    """Default-deny for scoped tokens: a ``scanner`` or ``read`` token reaches only views
    whose ``token_scopes`` admit its scope (``compliance.tokens.scope_allows``). Sessions
    and ``full`` tokens pass; the view's other permissions still apply."""

    def has_permission(self, request, view):
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        if tokens.scope_allows(token.scope, view_scopes=getattr(view, "token_scopes", ()), method=request.method):
            return True
        tokens.token_scope_refused(token, method=request.method, path=request.path)
        self.message = f"This token's scope ({token.scope}) does not allow {request.method} {request.path}."
        return False
