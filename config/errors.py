"""The one exception every service raises when a business rule refuses a write."""

from __future__ import annotations


class RuleViolation(Exception):
    """A business rule refused the operation; nothing was written.

    ``code`` is stable and machine-readable (e.g. ``"consent_missing"``), ``message``
    is for people, ``field`` names the input at fault when there is one. It carries no
    HTTP status: the API layer maps codes to statuses in one table
    (``config.api_errors.STATUS_BY_CODE``; a code not listed is a 409 Conflict).
    """

    def __init__(self, code: str, message: str, *, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body
