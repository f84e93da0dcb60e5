"""The one exception every service raises when a business rule refuses a write."""

from __future__ import annotations


class RuleViolation(Exception):
    """A business rule refused the operation; nothing was written.

    ``code`` is stable and machine-readable (e.g. ``"consent_missing"``), ``message``
    is for people, ``field`` names the input at fault when there is one.
    """

    status_code = 409

    def __init__(self, code: str, message: str, *, field: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body
