"""Reads of the audit trail for the record pages. The caller has already looked the record
up through its app's site-scoped selector: these return the events about that record."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import F, Q, QuerySet

from audit.actions import AuditAction
from audit.models import AuditEvent

# The events that change a recorded value after the fact, each with its reason and the
# old and new values (21 CFR 11.10(e)): what a record's correction history lists.
CORRECTION_ACTIONS = frozenset(
    {
        AuditAction.SUBJECT_UPDATED,
        AuditAction.SUBJECT_STATUS_CHANGED,
        AuditAction.IDENTITY_UPDATED,
        AuditAction.CONSENT_UPDATED,
        AuditAction.CONSENT_WITHDRAWN,
        AuditAction.LOT_UPDATED,
        AuditAction.LOT_QC_STATUS_CHANGED,
        AuditAction.BATCH_UPDATED,
        AuditAction.BATCH_RELEASE_STATUS_CHANGED,
        AuditAction.INJECTION_UPDATED,
        AuditAction.SCAN_REFILED,
    }
)


def correction_history(records: Iterable[tuple[str, object]]) -> QuerySet[AuditEvent]:
    """The correction events about ``records`` (pairs of object type, as
    ``model._meta.label_lower``, and primary key), oldest first: chained events in chain order,
    then those still waiting to be chained (``audit.chain``: for milliseconds after their commit)."""
    match = Q(pk__in=[])
    for object_type, object_id in records:
        match |= Q(object_type=object_type, object_id=str(object_id))
    return (
        AuditEvent.objects.filter(match, action__in=[int(a) for a in CORRECTION_ACTIONS])
        .select_related("actor")
        .order_by(F("sequence").asc(nulls_last=True), "id")
    )
