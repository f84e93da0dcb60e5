"""Helpers shared by the tests of the ``<entity>_correct`` services."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from config.errors import RuleViolation


def stored(obj) -> dict:
    """Every concrete column of ``obj`` as the database holds it now."""
    fresh = type(obj).objects.get(pk=obj.pk)
    return {field.attname: getattr(fresh, field.attname) for field in fresh._meta.concrete_fields}


def refused(code: str, nothing_written, service, obj, /, **kwargs) -> RuleViolation:
    """Call ``service(**kwargs)``, expect ``code``, and prove nothing was written: no row
    added anywhere (``nothing_written``) and no column of ``obj`` changed."""
    before = stored(obj)
    with nothing_written(), pytest.raises(RuleViolation) as caught:
        service(**kwargs)
    assert caught.value.code == code, caught.value.message
    assert stored(obj) == before
    return caught.value


def one_event_since(sequence: int) -> AuditEvent:
    events = list(AuditEvent.objects.filter(sequence__gt=sequence))
    assert len(events) == 1, [e.action_name for e in events]
    return events[0]


def head_sequence() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
