"""Consent: documents, signing, withdrawal, the scope-in-force rule, corrections."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import diff
from config.errors import RuleViolation
from trials.models import (
    Consent,
    ConsentDocument,
    ConsentScope,
    Subject,
    Trial,
)
from trials.permissions import access
from trials.selectors import (
    consent_standing,
    governing_consent,
    latest_effective_document,
    scope_withdrawn_at,
)
from trials.services._common import (
    _audit,
    _local_date,
    _not_in_future,
    _require_reason,
    _signed_visit_changed,
    _snapshot,
    sha256_of,
)
from trials.services._corrections import _IDS, _apply, _require_change, _require_correctable


def consent_document_create(
    *, actor, trial: Trial, version: str, irb_approval_date: dt.date, effective_date: dt.date, file
) -> ConsentDocument:
    # A new version supersedes the old one at every site: a trial-level decision.
    access.require_trial_role(actor, trial=trial, roles=access.TRIAL_RESOURCE_ROLES, action="add consent documents")
    document = ConsentDocument(
        trial=trial,
        version=version,
        irb_approval_date=irb_approval_date,
        effective_date=effective_date,
        file=file,
        sha256=sha256_of(file),
    )
    with transaction.atomic():
        document.full_clean()
        document.save()
        _audit(
            actor=actor,
            action=AuditAction.CONSENT_DOCUMENT_CREATED,
            obj=document,
            trial_id=trial.pk,
            changes=diff(None, _snapshot(document)),
        )
    return document


def _validated_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = list(dict.fromkeys(scopes or []))
    unknown = [s for s in scopes if s not in ConsentScope.values]
    if unknown or not scopes:
        raise RuleViolation(
            "invalid_scope",
            f"Scopes must be a non-empty list of {', '.join(ConsentScope.values)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "."),
            field="scopes",
        )
    return scopes


def _check_document_in_force(
    subject: Subject, document: ConsentDocument, signed_at: dt.datetime, *, field: str
) -> None:
    """A consent is signed on the document version in force at its site that day
    (consent_sign; consent_correct asks it again of a corrected signature time)."""
    signed_on = _local_date(signed_at, subject.site)
    if document.effective_date > signed_on:
        raise RuleViolation(
            "consent_document_not_effective",
            f"Consent v{document.version} takes effect on {document.effective_date}; it was not in force on {signed_on}.",
            field=field,
        )
    latest = latest_effective_document(subject.trial, on=signed_on)
    if latest is not None and latest != document:
        remedy = (
            f": sign the version in force on {signed_on}."
            if field == "document"
            else f"; it cannot have been signed on {signed_on}."
        )
        raise RuleViolation(
            "consent_document_superseded",
            f"Consent v{document.version} was superseded by v{latest.version} on {latest.effective_date}{remedy}",
            field=field,
        )


def _check_signed_after_withdrawals(
    subject: Subject,
    signed_at: dt.datetime,
    *,
    correcting: Consent | None = None,
) -> None:
    # The latest signature governs (governing_consent), so a consent dated before a
    # recorded withdrawal (of another consent, when ``correcting`` one) would silently
    # cancel that withdrawal.
    others = Consent.objects.filter(subject=subject)
    if correcting is not None:
        others = others.exclude(pk=correcting.pk)
    later = [
        w for c in others for s in c.withdrawn_scopes if (w := scope_withdrawn_at(c, s)) is not None and w > signed_at
    ]
    if later:
        must = "this consent must be dated" if correcting is not None else "a new consent must be signed"
        raise RuleViolation(
            "signed_before_withdrawal",
            f"Subject {subject.code} withdrew consent on {max(later):%Y-%m-%d %H:%M} UTC: {must} after that.",
            field="signed_at",
        )


def consent_sign(
    *, actor, subject: Subject, document: ConsentDocument, scopes: Iterable[str], signed_at: dt.datetime
) -> Consent:
    access.require_role(actor, site=subject.site, roles=access.CONSENT_ROLES, action="record consent")
    scopes = _validated_scopes(scopes)
    _not_in_future(signed_at, "signed_at", "The signature time")
    if document.trial_id != subject.trial_id:
        raise RuleViolation(
            "consent_document_wrong_trial", "The consent document belongs to another trial.", field="document"
        )
    _check_document_in_force(subject, document, signed_at, field="document")
    if subject.status == Subject.Status.WITHDRAWN:
        raise RuleViolation(
            "subject_withdrawn", f"Subject {subject.code} has withdrawn from the trial.", field="subject"
        )
    _check_signed_after_withdrawals(subject, signed_at)
    consent = Consent(
        subject=subject,
        document=document,
        signed_at=signed_at,
        obtained_by=actor,
        **{f"scope_{s}": s in scopes for s in ConsentScope.values},
    )
    with transaction.atomic():
        consent.full_clean()
        consent.save()
        _audit(
            actor=actor,
            action=AuditAction.CONSENT_SIGNED,
            obj=consent,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes=diff(None, _snapshot(consent)),
        )
        _signed_visit_changed(subject, actor=actor, reason=f"consent v{document.version} signed after sign-off")
    return consent


def consent_withdraw(
    *, actor, consent: Consent, scopes: Iterable[str], reason: str, withdrawn_at: dt.datetime | None = None
) -> Consent:
    subject = consent.subject
    access.require_role(actor, site=subject.site, roles=access.CONSENT_ROLES, action="record a consent withdrawal")
    reason = _require_reason(reason)
    scopes = _validated_scopes(scopes)
    withdrawn_at = withdrawn_at or timezone.now()
    _not_in_future(withdrawn_at, "withdrawn_at", "The withdrawal time")
    with transaction.atomic():
        consent = Consent.objects.select_for_update().get(pk=consent.pk)
        not_granted = [s for s in scopes if s not in consent.scopes]
        if not_granted:
            raise RuleViolation(
                "scope_not_granted", f"Scope(s) never granted: {', '.join(not_granted)}.", field="scopes"
            )
        already = [s for s in scopes if s in consent.withdrawn_scopes]
        if already:
            raise RuleViolation(
                "scope_already_withdrawn", f"Scope(s) already withdrawn: {', '.join(already)}.", field="scopes"
            )
        if withdrawn_at < consent.signed_at:
            raise RuleViolation(
                "withdrawn_before_signed",
                "A consent cannot be withdrawn before it was signed.",
                field="withdrawn_at",
            )
        # Only the consent in force at that time speaks for the subject: a withdrawal
        # recorded on a superseded one would be accepted and change nothing.
        governing = governing_consent(subject, at=withdrawn_at)
        if governing is not None and governing.pk != consent.pk:
            raise RuleViolation(
                "consent_superseded",
                f"Consent #{consent.pk} was superseded by consent "
                f"#{governing.pk} (v{governing.document.version}): withdraw from that one.",
                field="consent",
            )
        fields = ["withdrawn_at", "withdrawn_scopes", "withdrawal_reason"]
        before = _snapshot(consent, fields)
        stamp = withdrawn_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        consent.withdrawn_scopes = {**consent.withdrawn_scopes, **dict.fromkeys(scopes, stamp)}
        consent.withdrawn_at = withdrawn_at
        consent.withdrawal_reason = reason
        consent.full_clean()
        consent.save(update_fields=fields)
        _audit(
            actor=actor,
            action=AuditAction.CONSENT_WITHDRAWN,
            obj=consent,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes=diff(before, _snapshot(consent, fields)),
            reason=reason,
        )
        _signed_visit_changed(subject, actor=actor, reason=f"consent withdrawn ({', '.join(scopes)}): {reason}")
    return consent


def assert_scope_active(subject: Subject, scope: str, at: dt.datetime | None = None) -> None:
    """Raise unless ``subject`` consented to ``scope`` and had not withdrawn it at ``at``
    (the rule: ``trials.selectors.consent_standing``).

    The scan pipeline calls this before accepting an upload or processing a scan.
    """
    standing = consent_standing(subject, scope, at)
    if standing.consent is None:
        raise RuleViolation(
            "consent_missing",
            f"Subject {subject.code} has no {standing.scope} consent in force at {standing.at:%Y-%m-%d %H:%M} UTC.",
        )
    if standing.withdrawn_at is not None:
        raise RuleViolation(
            "consent_withdrawn",
            f"Subject {subject.code} withdrew {standing.scope} consent on {standing.withdrawn_at:%Y-%m-%d %H:%M} UTC.",
        )


_CONSENT_CORRECTABLE = ("signed_at", "scopes")


_CONSENT_LOCKED = {
    **_IDS,
    "subject": "a consent given by another subject is another consent; record it instead.",
    "document": "the document version is fixed by the signature date; correct signed_at if that was wrong.",
    "obtained_by": "who obtained the consent is attributable to the user who recorded it.",
    "withdrawn_at": "a withdrawal is recorded through its own action (POST .../withdraw/).",
    "withdrawn_scopes": "a withdrawal is recorded through its own action (POST .../withdraw/).",
    "withdrawal_reason": "a withdrawal is recorded through its own action (POST .../withdraw/).",
}


def consent_correct(*, actor, consent: Consent, reason: str, **fields) -> Consent:
    subject = consent.subject
    access.require_role(actor, site=subject.site, roles=access.CONSENT_ROLES, action="correct a consent")
    reason = _require_reason(reason)
    _require_correctable("consent", fields, correctable=_CONSENT_CORRECTABLE, locked=_CONSENT_LOCKED)
    values = {}
    if "scopes" in fields:
        scopes = _validated_scopes(fields["scopes"])
        values.update({f"scope_{s}": s in scopes for s in ConsentScope.values})
    if "signed_at" in fields:
        values["signed_at"] = fields["signed_at"]
        _not_in_future(fields["signed_at"], "signed_at", "The signature time")
    with transaction.atomic():
        consent = (
            Consent.objects.select_for_update(of=("self",))
            .select_related("document", "subject__site")
            .get(pk=consent.pk)
        )
        if "scopes" in fields and consent.withdrawn_scopes:
            raise RuleViolation(
                "scopes_locked_after_withdrawal",
                f"Consent #{consent.pk} has a recorded withdrawal: "
                "its scopes are what was withdrawn from and cannot change.",
                field="scopes",
            )
        before = _snapshot(consent, values)
        _apply(consent, values)
        changes = _require_change("consent", before, _snapshot(consent, values))
        signed_at = consent.signed_at
        _check_document_in_force(subject, consent.document, signed_at, field="signed_at")
        if consent.withdrawn_at is not None and signed_at > consent.withdrawn_at:
            raise RuleViolation(
                "signed_after_withdrawal",
                f"Consent #{consent.pk} was withdrawn on "
                f"{consent.withdrawn_at:%Y-%m-%d %H:%M} UTC; it cannot have been signed after that.",
                field="signed_at",
            )
        _check_signed_after_withdrawals(subject, signed_at, correcting=consent)
        consent.full_clean()
        consent.save(update_fields=list(values))
        # The corrected consent must still cover every injection already given under it.
        # Asked after the save, so governing_consent sees the corrected row; a refusal
        # rolls the save back with the rest of the transaction.
        for injection in subject.injections.order_by("administered_at"):
            try:
                assert_scope_active(subject, ConsentScope.IMAGING, at=injection.administered_at)
            except RuleViolation as exc:
                raise RuleViolation(
                    "consent_correction_uncovers_injection",
                    f"After this correction, injection "
                    f"#{injection.pk} would have no imaging consent in force: {exc.message}",
                    field="signed_at" if "signed_at" in fields else "scopes",
                ) from None
        _audit(
            actor=actor,
            action=AuditAction.CONSENT_UPDATED,
            obj=consent,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes=changes,
            reason=reason,
        )
        _signed_visit_changed(subject, actor=actor, reason=f"consent #{consent.pk} corrected: {reason}")
    return consent
