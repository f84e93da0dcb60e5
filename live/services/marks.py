"""Injection marks: a clinician at the injection says when it started, paused, resumed and
stopped, with a button on the live page (``POST /api/v1/live-sessions/{id}/marks/``).

A mark is entered only while the session is open or streaming, by the site's imaging
staff, investigators or coordinators (the clinicians who acknowledge alerts: one rule,
``live.services.alerts.ACKNOWLEDGE_ROLES``). It is stamped with the server's time
(``at``) and the stream position (``frame``: the session's ``frames_recorded``, the next
frame index, None while no frame has streamed), audited (``LIVE_MARK_ENTERED``) and, at
the end of the session, written into the recording (``live.services.sessions``).

Order, so that a record reads as one injection:
- ``injection_start`` first and once (``injection_already_started``);
- ``injection_pause`` only while running (``injection_not_started``, ``injection_not_running``);
- ``injection_resume`` only while paused (``injection_not_paused``);
- ``injection_stop`` once, after the start, running or paused (``injection_not_started``);
- nothing after the stop (``injection_stopped``).

What the marks do to "% of the dose injected so far": they say when the injection ran;
with the planned duration (``live.dose.planned_duration``: the injection's own
``planned_duration_s``, else the platform default ``settings.LIVE_INJECTION_EXPECTED_S``; a
constant rate assumed) they give the dose injected so far at each frame (``live.dose``). The live
figure ``target_percent_of_injected`` stays a percent of the whole dose (``"dose_basis":
"whole dose"``); the metrics event carries the dose so far and
``target_percent_of_dose_so_far`` beside it. The marks are drawn on the curves so a reader
sees where, within the injection, each point lies.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation
from live.models import LiveMark, LiveMarkKind, LiveSession, LiveStatus
from live.services.alerts import ACKNOWLEDGE_ROLES
from trials.permissions import access

#: Who enters marks: the clinicians at the injection, as for acknowledging alerts.
MARK_ROLES = ACKNOWLEDGE_ROLES
#: Sessions that take marks.
MARKABLE_STATUSES = (LiveStatus.OPEN, LiveStatus.STREAMING)

NOT_STARTED, RUNNING, PAUSED, STOPPED = "not started", "running", "paused", "stopped"
_NEXT_STATE = {
    LiveMarkKind.INJECTION_START: RUNNING,
    LiveMarkKind.INJECTION_PAUSE: PAUSED,
    LiveMarkKind.INJECTION_RESUME: RUNNING,
    LiveMarkKind.INJECTION_STOP: STOPPED,
}


def injection_state(kinds) -> str:
    """The injection's state after marks of ``kinds`` in order: not started, running, paused, stopped."""
    state = NOT_STARTED
    for kind in kinds:
        state = _NEXT_STATE[LiveMarkKind(kind)]
    return state


def allowed_kinds(state: str) -> list[str]:
    """The marks that may follow ``state`` (what the page enables)."""
    return {
        NOT_STARTED: [LiveMarkKind.INJECTION_START.value],
        RUNNING: [LiveMarkKind.INJECTION_PAUSE.value, LiveMarkKind.INJECTION_STOP.value],
        PAUSED: [LiveMarkKind.INJECTION_RESUME.value, LiveMarkKind.INJECTION_STOP.value],
        STOPPED: [],
    }[state]


def _check_order(kind: str, state: str) -> None:
    if state == STOPPED:
        raise RuleViolation("injection_stopped", "The injection was marked stopped: no mark can follow the stop.")
    if kind == LiveMarkKind.INJECTION_START:
        if state != NOT_STARTED:
            raise RuleViolation("injection_already_started", "The injection start is already marked.", field="kind")
        return
    if state == NOT_STARTED:
        raise RuleViolation(
            "injection_not_started",
            "Mark the injection start first: nothing can pause or stop before it.",
            field="kind",
        )
    if kind == LiveMarkKind.INJECTION_PAUSE and state != RUNNING:
        raise RuleViolation("injection_not_running", "The injection is paused: resume or stop it.", field="kind")
    if kind == LiveMarkKind.INJECTION_RESUME and state != PAUSED:
        raise RuleViolation(
            "injection_not_paused", "The injection is running: only a paused one resumes.", field="kind"
        )


def mark_enter(*, actor, session: LiveSession, kind: str, note: str = "") -> LiveMark:
    """Enter a mark of ``kind`` (a ``LiveMarkKind`` value) for ``session`` now, audited."""
    access.require_role(actor, site=session.subject.site, roles=MARK_ROLES, action="enter injection marks")
    if kind not in LiveMarkKind.values:
        raise RuleViolation(
            "invalid_kind", f"A mark is one of {', '.join(LiveMarkKind.values)}, not {kind!r}.", field="kind"
        )
    note = (note or "").strip()
    with transaction.atomic():
        # The row lock orders concurrent marks (and a mark against the session's end).
        locked = LiveSession.objects.select_for_update(of=("self",)).select_related("subject").get(pk=session.pk)
        if locked.status not in MARKABLE_STATUSES:
            raise RuleViolation(
                "session_not_live",
                f"Live session #{locked.pk} is {locked.status}: marks are entered while it is open or streaming.",
            )
        state = injection_state(
            LiveMark.objects.filter(session=locked).order_by("at", "id").values_list("kind", flat=True)
        )
        _check_order(kind, state)
        mark = LiveMark(
            session=locked,
            kind=kind,
            at=timezone.now(),
            frame=int(locked.frames_recorded) if locked.status == LiveStatus.STREAMING else None,
            created_by=actor,
            note=note,
        )
        mark.full_clean()
        mark.save()
        subject = locked.subject
        record_event(
            actor=actor,
            action=AuditAction.LIVE_MARK_ENTERED,
            object_type="live.livemark",
            object_id=mark.pk,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes={
                "session": [None, locked.pk],
                "kind": [None, kind],
                "frame": [None, mark.frame],
                "at": [None, mark.at.isoformat()],
                "note": [None, note],
            },
        )
    return mark
