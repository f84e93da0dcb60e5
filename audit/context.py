"""Who is asking, from where: set once per request (or task) and read by the audit trail."""

from __future__ import annotations

import contextvars
import uuid
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    client_address: str | None = None


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar(
    "audit_request_context",
    default=RequestContext(),  # noqa: B039 - frozen
)


def current() -> RequestContext:
    return _current.get()


@contextmanager
def request_context(*, request_id: str | None = None, client_address: str | None = None):
    token = _current.set(RequestContext(request_id=request_id or uuid.uuid4().hex, client_address=client_address))
    try:
        yield
    finally:
        _current.reset(token)
