"""Helpers shared by the trial services: audit snapshots, reasons, dates, file digests."""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from collections.abc import Iterable
from decimal import Decimal

from django.db import models
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_change, record_event
from config.errors import RuleViolation
from config.reasons import require_reason
from trials.models import (
    Site,
    Subject,
)

# Never copied into an audit payload.
_SECRET_FIELDS = frozenset({"deidentification_secret"})


def _snapshot(obj, fields: Iterable[str] | None = None) -> dict:
    """Plain values of a model's concrete fields, for ``diff``."""
    values = {}
    for field in obj._meta.concrete_fields:
        if field.name in _SECRET_FIELDS or (fields is not None and field.name not in fields):
            continue
        value = getattr(obj, field.attname)
        if isinstance(value, FieldFile):
            value = value.name or ""
        elif isinstance(field, models.DecimalField) and value is not None:
            # As stored, so the trail says "11.200" whether the caller sent 11.2 or "11.200".
            value = Decimal(value).quantize(Decimal(1).scaleb(-field.decimal_places))
        values[field.attname] = value
    return values


def _audit(
    *, actor, action: AuditAction, obj, changes: dict, reason: str = "", site_id=None, trial_id=None, subject_id=None
):
    return record_event(
        actor=actor,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=obj.pk,
        trial_id=trial_id,
        site_id=site_id,
        subject_id=subject_id,
        changes=changes,
        reason=reason,
    )


def _signed_visit_changed(subject: Subject, *, actor, reason: str) -> None:
    """A signed subject visit whose content just changed loses its signatures now, in the
    same transaction as the change, with the change's reason (21 CFR 11.70): the rule is
    compliance.signatures', reached through the audit layer's change observers."""
    record_change(subject, actor=actor, reason=reason)


def _require_reason(reason: str | None) -> str:
    # One rule for every reason of the platform (config.reasons): present, and with substance.
    return require_reason(reason)


def _require_platform_admin(actor, action: str) -> None:
    # Trial set-up is done by platform administrators, or by a management command
    # (actor=None, recorded as the system in the audit trail).
    if actor is not None and not (actor.is_active and actor.is_superuser):
        raise RuleViolation("forbidden", f"Only a platform administrator may {action}.")


def _not_in_future(value: dt.datetime, field: str, what: str) -> None:
    if value > timezone.now() + dt.timedelta(minutes=5):  # allow small clock skew between devices
        raise RuleViolation(f"{field}_in_future", f"{what} cannot be in the future.", field=field)


def _local_date(value: dt.datetime, site: Site) -> dt.date:
    # Calendar questions (is the document effective? is the lot expired?) are asked in
    # the site's own time zone: 23:30 UTC may already be tomorrow at the site.
    return value.astimezone(zoneinfo.ZoneInfo(site.time_zone)).date()


def sha256_of(file) -> str:
    """The SHA-256 of an uploaded document, left rewound for storage."""
    file.seek(0)
    digest = hashlib.file_digest(file, "sha256")
    file.seek(0)
    return digest.hexdigest()
