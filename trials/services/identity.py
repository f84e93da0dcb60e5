"""A subject's identifiable data: set and read, each read audited (refusals too)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import diff, record_event
from config.errors import RuleViolation
from trials.models import (
    Subject,
    SubjectIdentity,
    Trial,
)
from trials.permissions import access
from trials.services._common import _audit, _require_reason

_IDENTITY_FIELDS = ("full_name", "date_of_birth", "medical_record_number")


def _identity_fingerprints(identity: SubjectIdentity | None, trial: Trial) -> dict:
    # The audit trail must show that a value changed without becoming a second copy of
    # the PHI (it is exported to auditors). A keyed hash per field lets an auditor
    # holding the value confirm it, and reveals nothing to anyone else.
    if identity is None:
        return {}
    key = trial.deidentification_secret.encode()
    return {
        name: "hmac-sha256:" + hmac.new(key, str(getattr(identity, name)).encode(), hashlib.sha256).hexdigest()[:16]
        for name in _IDENTITY_FIELDS
    }


def subject_identity_set(
    *, actor, subject: Subject, full_name: str, date_of_birth: dt.date, medical_record_number: str, reason: str = ""
) -> SubjectIdentity:
    if not access.can_write_identity(actor, subject):
        raise RuleViolation(
            "forbidden",
            "Only a coordinator or investigator at the subject's site may record identity.",
        )
    existing = SubjectIdentity.objects.filter(subject=subject).first()
    if existing is not None:
        reason = _require_reason(reason)
    if date_of_birth > timezone.localdate():
        raise RuleViolation(
            "date_of_birth_in_future",
            "The date of birth cannot be in the future.",
            field="date_of_birth",
        )
    if existing is not None and all(
        getattr(existing, name) == value
        for name, value in zip(_IDENTITY_FIELDS, (full_name, date_of_birth, medical_record_number), strict=True)
    ):
        raise RuleViolation("no_change", "The correction changes nothing in this identity.")
    before = _identity_fingerprints(existing, subject.trial)
    identity = existing or SubjectIdentity(subject=subject)
    identity.full_name = full_name
    identity.date_of_birth = date_of_birth
    identity.medical_record_number = medical_record_number
    with transaction.atomic():
        identity.full_clean()
        identity.save()
        _audit(
            actor=actor,
            action=AuditAction.IDENTITY_UPDATED if existing else AuditAction.IDENTITY_CREATED,
            obj=identity,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes=diff(before, _identity_fingerprints(identity, subject.trial)),
            reason=reason,
        )
    return identity


def _identity_read_refused(*, actor, requested: str, why: str, subject: Subject | None = None) -> None:
    # A refused attempt at PHI is a fact for the access log too (HIPAA 164.312(b)): it
    # commits on its own, whatever the response does. Only what was asked and why it was
    # refused: nothing of the identity, and no scope the reader could not see.
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.IDENTITY_READ_REFUSED,
            object_type="trials.subjectidentity",
            object_id=requested[:64],
            trial_id=subject.trial_id if subject else None,
            site_id=subject.site_id if subject else None,
            subject_id=subject.pk if subject else None,
            changes={"why": why},
        )


def subject_identity_read(*, actor, subject: Subject | None, requested_id=None) -> SubjectIdentity:
    """Hand out a subject's identity to a PHI role, and record that it was read.

    Every refusal is recorded as well: ``subject`` is None when the reader's scoped
    selector did not find ``requested_id`` (another site's subject, or none at all);
    that answers 404, as any record outside the reader's sites."""
    if subject is None:
        _identity_read_refused(actor=actor, requested=str(requested_id), why="not visible to the reader")
        raise RuleViolation("not_found", "Not found.")
    if not access.can_read_identity(actor, subject):
        _identity_read_refused(actor=actor, requested=str(subject.pk), subject=subject, why="role may not read PHI")
        raise RuleViolation("forbidden", "Your role may not read identifiable data.")
    identity = SubjectIdentity.objects.filter(subject=subject).first()
    if identity is None:
        raise RuleViolation("identity_missing", f"No identity is recorded for subject {subject.code}.")
    with transaction.atomic():
        _audit(
            actor=actor,
            action=AuditAction.IDENTITY_READ,
            obj=identity,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes={"fields_read": list(_IDENTITY_FIELDS)},
        )
    return identity
