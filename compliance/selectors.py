"""Scoped reads of compliance data."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from config.ids import parse_id


def audit_trial_ids(user) -> list[int]:
    """Trials whose audit trail ``user`` may browse: monitors and auditors, trial-wide."""
    from trials.models import Role
    from trials.permissions import access

    return list(
        access.active_memberships(user)
        .filter(site__isnull=True, role__in=[Role.MONITOR, Role.AUDITOR])
        .values_list("trial_id", flat=True)
    )


def audit_events_visible_to(
    user, *, subject=None, username=None, action=None, date_from=None, date_to=None
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(trial_id__in=audit_trial_ids(user))
    if subject:
        subject_id = parse_id(subject)
        events = (
            events.filter(subject_id=subject_id)
            if subject_id is not None
            else events.filter(subject_id__in=_subject_ids_by_code(subject))
        )
    if username:
        events = events.filter(actor_username=username)
    if action:
        value = parse_id(action) if str(action).isdigit() else getattr(AuditAction, str(action).upper(), None)
        events = events.filter(action=int(value)) if value is not None else events.none()
    if date_from:
        events = events.filter(occurred_at__date__gte=date_from)
    if date_to:
        events = events.filter(occurred_at__date__lte=date_to)
    return events.order_by("-sequence")


def _subject_ids_by_code(code: str):
    from trials.models import Subject

    return Subject.objects.filter(code=code).values("id")


def parse_date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def signatures_visible_to(user) -> QuerySet[Signature]:
    from trials.permissions.access import sponsor_trial_ids, visible_site_ids

    # Signatures name staff and carry exact dates: not part of a sponsor's de-identified view.
    return (
        Signature.objects.filter(site_id__in=visible_site_ids(user))
        .exclude(trial_id__in=sponsor_trial_ids(user))
        .select_related("content_type", "signer")
    )
