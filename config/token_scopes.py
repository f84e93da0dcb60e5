"""The scopes of API tokens: what a view admits (its ``token_scopes``) and what a token
carries (``compliance.models.ApiToken.scope``; ``compliance.tokens.scope_allows`` decides).

Here, in the shared plumbing, so that every app's views can name the scopes they admit
without importing the app that issues tokens."""

from __future__ import annotations

from django.db import models


class TokenScope(models.TextChoices):
    """What an API token may reach (``compliance.tokens.scope_allows``)."""

    FULL = "full", "Full: a person's own API client"
    SCANNER = "scanner", "Scanner bridge: uploads (and live sessions) only"
    READ = "read", "Integration: read-only"
