"""Verifying a trial's audit trail (monitors and auditors), audited."""

from __future__ import annotations

from django.db import transaction

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation


def audit_trail_verify(*, actor, trial):
    """Run the chain verification for a monitor or auditor of ``trial`` and record the result."""
    from audit.chain import verify_chain
    from compliance.selectors import audit_trial_ids

    if trial.pk not in audit_trial_ids(actor):
        raise RuleViolation("forbidden", "Only a monitor or auditor of the trial may verify its audit trail.")
    result = verify_chain()
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.AUDIT_TRAIL_VERIFIED,
            object_type="compliance.auditevent",
            object_id=result.head_sequence or "",
            trial_id=trial.pk,
            changes=result.as_dict(),
        )
    return result
