"""Live alerts: raised by the live worker, acknowledged by a clinician of the site.

An alert is decision support, never an action: it says what the live numbers show
(provisional; the recording's offline quantification is authoritative). One alert of a
kind is open per session until someone acknowledges it (the model's constraint): a
condition that persists is one alert, not one per frame.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation
from config.reasons import require_reason
from live.models import LiveAlert, LiveSession
from trials.models import Role
from trials.permissions import access

# Clinicians of the session's site: they watch the injection and answer for the decision.
ACKNOWLEDGE_ROLES = frozenset({Role.INVESTIGATOR, Role.COORDINATOR, Role.IMAGING_STAFF})


def _audit(*, actor, action: AuditAction, alert: LiveAlert, session: LiveSession, changes: dict, reason: str = ""):
    subject = session.subject
    record_event(
        actor=actor,
        action=action,
        object_type="live.livealert",
        object_id=alert.pk,
        trial_id=subject.trial_id,
        site_id=subject.site_id,
        subject_id=subject.pk,
        changes=changes,
        reason=reason,
    )


def alert_raise(
    *,
    session: LiveSession,
    kind: str,
    message: str,
    frame: int | None = None,
    acquired_at: float | None = None,
    value_percent: float | None = None,
    threshold_percent: float | None = None,
) -> LiveAlert | None:
    """Record an alert of ``kind`` for the session (audited), or None when one of that kind
    is still open (unacknowledged): the condition is already on the clinician's screen."""
    if LiveAlert.objects.filter(session=session, kind=kind, acknowledged_at__isnull=True).exists():
        return None
    alert = LiveAlert(
        session=session,
        kind=kind,
        frame=frame,
        acquired_at=acquired_at,
        value_percent=value_percent,
        threshold_percent=threshold_percent,
        message=message,
    )
    alert.full_clean()
    try:
        with transaction.atomic():
            alert.save()
            _audit(
                actor=None,
                action=AuditAction.LIVE_ALERT_RAISED,
                alert=alert,
                session=session,
                changes={
                    "session": [None, session.pk],
                    "kind": [None, kind],
                    "frame": [None, frame],
                    "value_percent": [None, value_percent],
                    "threshold_percent": [None, threshold_percent],
                },
            )
    except IntegrityError:
        # Another writer raised the same kind between the check and the save (the
        # one-open-per-kind constraint): that alert stands.
        return None
    return alert


def alert_acknowledge(*, actor, alert: LiveAlert, reason: str) -> LiveAlert:
    """A clinician of the session's site has seen the alert and says what was done about it."""
    session = alert.session
    access.require_role(actor, site=session.subject.site, roles=ACKNOWLEDGE_ROLES, action="acknowledge live alerts")
    text = require_reason(reason)
    with transaction.atomic():
        locked = LiveAlert.objects.select_for_update().get(pk=alert.pk)
        if locked.acknowledged_at is not None:
            raise RuleViolation(
                "alert_already_acknowledged",
                f"This alert was acknowledged at {locked.acknowledged_at:%Y-%m-%d %H:%M:%S} UTC.",
            )
        locked.acknowledged_by = actor
        locked.acknowledged_at = timezone.now()
        locked.acknowledgement_reason = text
        locked.full_clean()
        locked.save(update_fields=["acknowledged_by", "acknowledged_at", "acknowledgement_reason"])
        _audit(
            actor=actor,
            action=AuditAction.LIVE_ALERT_ACKNOWLEDGED,
            alert=locked,
            session=session,
            changes={"acknowledged_at": [None, locked.acknowledged_at.isoformat()]},
            reason=text,
        )
    return locked
