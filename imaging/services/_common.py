"""Helpers shared by the imaging services."""

from __future__ import annotations

import logging

from audit.actions import AuditAction
from audit.chain import record_event
from imaging.models import (
    Scan,
)

log = logging.getLogger(__name__)


def _audit_scan(
    *,
    actor,
    action: AuditAction,
    scan: Scan,
    changes: dict,
    reason: str = "",
    object_type="imaging.scan",
    object_id=None,
):
    subject = scan.subject
    record_event(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id or scan.pk,
        trial_id=subject.trial_id,
        site_id=subject.site_id,
        subject_id=subject.pk,
        changes=changes,
        reason=reason,
    )
