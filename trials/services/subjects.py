"""Subjects: enrolment, status changes and corrections."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import diff
from config.errors import RuleViolation
from config.reasons import require_confirmation
from trials.models import (
    Site,
    Subject,
)
from trials.permissions import access
from trials.services._common import _audit, _local_date, _require_reason, _signed_visit_changed, _snapshot
from trials.services._corrections import _IDS, _apply, _require_change, _require_correctable


def _enrolment_date_not_in_future(enrolment_date: dt.date, site: Site) -> None:
    # "Today" is the site's: at 23:30 UTC it may already be tomorrow in Berlin.
    if enrolment_date > _local_date(timezone.now(), site):
        raise RuleViolation(
            "enrolment_date_in_future",
            "The enrolment date cannot be in the future.",
            field="enrolment_date",
        )


def subject_enrol(*, actor, site: Site, enrolment_date: dt.date, status: str = Subject.Status.SCREENING) -> Subject:
    access.require_role(actor, site=site, roles=access.ENROL_ROLES, action="enrol subjects")
    if status not in (Subject.Status.SCREENING, Subject.Status.ENROLLED):
        raise RuleViolation("invalid_initial_status", "A new subject starts in screening or enrolled.", field="status")
    _enrolment_date_not_in_future(enrolment_date, site)
    with transaction.atomic():
        # Lock the site so two enrolments at once cannot draw the same serial.
        site = Site.objects.select_for_update().select_related("trial").get(pk=site.pk)
        serial = Subject.objects.filter(site=site).count() + 1
        code = f"{site.trial.protocol_number}-{site.code}-{serial:04d}"
        subject = Subject(trial=site.trial, site=site, code=code, enrolment_date=enrolment_date, status=status)
        subject.full_clean()
        subject.save()
        _audit(
            actor=actor,
            action=AuditAction.SUBJECT_ENROLLED,
            obj=subject,
            trial_id=site.trial_id,
            site_id=site.pk,
            subject_id=subject.pk,
            changes=diff(None, _snapshot(subject)),
        )
    return subject


_FINAL_SUBJECT_STATUSES = (Subject.Status.COMPLETED, Subject.Status.WITHDRAWN)


def subject_change_status(*, actor, subject: Subject, status: str, reason: str, confirm: bool = False) -> Subject:
    access.require_role(actor, site=subject.site, roles=access.ENROL_ROLES, action="change a subject's status")
    reason = _require_reason(reason)
    if subject.status in _FINAL_SUBJECT_STATUSES:
        raise RuleViolation(
            "subject_status_final", f"Subject {subject.code} is {subject.status}: the status is final.", field="status"
        )
    if status == subject.status:
        raise RuleViolation("status_unchanged", f"Subject {subject.code} is already {status}.", field="status")
    if status in _FINAL_SUBJECT_STATUSES:
        require_confirmation(
            confirm,
            consequences=f"Subject {subject.code} will be {status} for good: no further "
            "injection can be recorded for them and the status can never change again.",
        )
    with transaction.atomic():
        subject = Subject.objects.select_for_update().get(pk=subject.pk)
        before = _snapshot(subject, ["status"])
        subject.status = status
        subject.full_clean()
        subject.save(update_fields=["status"])
        _audit(
            actor=actor,
            action=AuditAction.SUBJECT_STATUS_CHANGED,
            obj=subject,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes=diff(before, _snapshot(subject, ["status"])),
            reason=reason,
        )
        _signed_visit_changed(subject, actor=actor, reason=f"status changed to {status}: {reason}")
    return subject


_SUBJECT_CORRECTABLE = ("enrolment_date",)


_SUBJECT_LOCKED = {
    **_IDS,
    "code": "the subject code is generated at enrolment and labels every sample, scan and export.",
    "site": "a subject never moves to another site; withdraw and enrol again.",
    "status": "change the status through its own action (POST .../status/), which checks the transitions.",
}


def subject_correct(*, actor, subject: Subject, reason: str, **fields) -> Subject:
    access.require_role(actor, site=subject.site, roles=access.ENROL_ROLES, action="correct a subject")
    reason = _require_reason(reason)
    _require_correctable("subject", fields, correctable=_SUBJECT_CORRECTABLE, locked=_SUBJECT_LOCKED)
    if "enrolment_date" in fields:
        _enrolment_date_not_in_future(fields["enrolment_date"], subject.site)
    with transaction.atomic():
        subject = Subject.objects.select_for_update(of=("self",)).select_related("site", "trial").get(pk=subject.pk)
        before = _snapshot(subject, fields)
        _apply(subject, fields)
        changes = _require_change("subject", before, _snapshot(subject, fields))
        subject.full_clean()
        subject.save(update_fields=list(fields))
        _audit(
            actor=actor,
            action=AuditAction.SUBJECT_UPDATED,
            obj=subject,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes=changes,
            reason=reason,
        )
        _signed_visit_changed(subject, actor=actor, reason=f"subject corrected: {reason}")
    return subject
