"""Every write to trial data, with its business rules and its audit event.

Shape: ``<entity>_<action>(*, actor, ...) -> Model``. Each service checks the actor's
role and the rules first, then ``full_clean()`` and ``save()`` and
``record_event(...)`` inside one ``transaction.atomic``, so a change and its audit
event commit together. A refused rule raises ``RuleViolation`` before anything is
written: no row, no file, no audit event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import zoneinfo
from collections.abc import Iterable
from decimal import Decimal

from django.contrib.auth import authenticate
from django.db import models, transaction
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from audit import credentials
from audit.actions import AuditAction
from audit.chain import diff, record_event
from compliance import tokens, twofactor
from compliance.signatures import signature_invalidate_if_changed
from config.errors import RuleViolation
from config.reasons import require_confirmation, require_reason
from trials.models import (
    CellBatch,
    Consent,
    ConsentDocument,
    ConsentScope,
    Injection,
    Membership,
    NanoparticleLot,
    Site,
    Subject,
    SubjectIdentity,
    Trial,
    iron_mg_per_ml_from_mmol_per_l,
    iron_mmol_per_l_disagreeing,
    iron_mmol_per_l_from_mg_per_ml,
)
from trials.permissions import access
from trials.selectors import (
    batch_cells_remaining,
    consent_standing,
    governing_consent,
    latest_effective_document,
    scope_withdrawn_at,
)

# Never copied into an audit payload.
_SECRET_FIELDS = frozenset({"deidentification_secret"})


# --------------------------------------------------------------------------- helpers


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
    same transaction as the change, with the change's reason (21 CFR 11.70)."""
    signature_invalidate_if_changed(subject, actor=actor, reason=reason)


def _require_reason(reason: str | None) -> str:
    # One rule for every reason of the platform (config.reasons): present, and with substance.
    return require_reason(reason)


def _require_platform_admin(actor, action: str) -> None:
    # Trial set-up is done by platform administrators, or by a management command
    # (actor=None, recorded as the system in the audit trail).
    if actor is not None and not (actor.is_active and actor.is_superuser):
        raise RuleViolation("forbidden", f"Only a platform administrator may {action}.", status_code=403)


def _not_in_future(value: dt.datetime, field: str, what: str) -> None:
    if value > timezone.now() + dt.timedelta(minutes=5):  # allow small clock skew between devices
        raise RuleViolation(f"{field}_in_future", f"{what} cannot be in the future.", field=field, status_code=400)


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


# --------------------------------------------------------------------------- trial set-up


def trial_create(
    *,
    actor,
    protocol_number: str,
    title: str,
    phase: str,
    status: str = Trial.Status.PLANNED,
    off_target_alert_percent: Decimal | None = None,
) -> Trial:
    _require_platform_admin(actor, "create a trial")
    trial = Trial(protocol_number=protocol_number, title=title, phase=phase, status=status)
    if off_target_alert_percent is not None:
        trial.off_target_alert_percent = off_target_alert_percent
    with transaction.atomic():
        trial.full_clean()
        trial.save()
        _audit(
            actor=actor,
            action=AuditAction.TRIAL_CREATED,
            obj=trial,
            trial_id=trial.pk,
            changes=diff(None, _snapshot(trial)),
        )
    return trial


def site_create(*, actor, trial: Trial, code: str, name: str, time_zone: str) -> Site:
    _require_platform_admin(actor, "add a site")
    site = Site(trial=trial, code=code, name=name, time_zone=time_zone)
    with transaction.atomic():
        site.full_clean()
        site.save()
        _audit(
            actor=actor,
            action=AuditAction.SITE_CREATED,
            obj=site,
            trial_id=trial.pk,
            site_id=site.pk,
            changes=diff(None, _snapshot(site)),
        )
    return site


def membership_grant(*, actor, user, trial: Trial, role: str, site: Site | None = None) -> Membership:
    _require_platform_admin(actor, "grant a role")
    membership = Membership(user=user, trial=trial, site=site, role=role)
    with transaction.atomic():
        membership.full_clean()
        membership.save()
        _audit(
            actor=actor,
            action=AuditAction.MEMBERSHIP_GRANTED,
            obj=membership,
            trial_id=trial.pk,
            site_id=site.pk if site else None,
            changes=diff(None, _snapshot(membership)),
        )
    return membership


# --------------------------------------------------------------------------- subjects


def subject_enrol(*, actor, site: Site, enrolment_date: dt.date, status: str = Subject.Status.SCREENING) -> Subject:
    access.require_role(actor, site=site, roles=access.ENROL_ROLES, action="enrol subjects")
    if status not in (Subject.Status.SCREENING, Subject.Status.ENROLLED):
        raise RuleViolation(
            "invalid_initial_status", "A new subject starts in screening or enrolled.", field="status", status_code=400
        )
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
        raise RuleViolation("no_change", f"Subject {subject.code} is already {status}.", field="status")
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
            status_code=403,
        )
    existing = SubjectIdentity.objects.filter(subject=subject).first()
    if existing is not None:
        reason = _require_reason(reason)
    if date_of_birth > timezone.localdate():
        raise RuleViolation(
            "date_of_birth_in_future",
            "The date of birth cannot be in the future.",
            field="date_of_birth",
            status_code=400,
        )
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
        raise RuleViolation("not_found", "Not found.", status_code=404)
    if not access.can_read_identity(actor, subject):
        _identity_read_refused(actor=actor, requested=str(subject.pk), subject=subject, why="role may not read PHI")
        raise RuleViolation("forbidden", "Your role may not read identifiable data.", status_code=403)
    identity = SubjectIdentity.objects.filter(subject=subject).first()
    if identity is None:
        raise RuleViolation("identity_missing", f"No identity is recorded for subject {subject.code}.", status_code=404)
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


# --------------------------------------------------------------------------- consent


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
            status_code=400,
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
                status_code=400,
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


# --------------------------------------------------------------------------- nanoparticle lots


def _iron_concentrations(mg_per_ml: Decimal | None, mmol_per_l: Decimal | None) -> tuple[Decimal, Decimal]:
    # One is computed from the other (55.845 g/mol), so the two never disagree; when
    # both are given, clean() checks they agree (iron_mmol_per_l_disagreeing).
    if mg_per_ml is not None:
        return mg_per_ml, mmol_per_l if mmol_per_l is not None else iron_mmol_per_l_from_mg_per_ml(mg_per_ml)
    if mmol_per_l is not None:
        return iron_mg_per_ml_from_mmol_per_l(mmol_per_l), mmol_per_l
    raise RuleViolation(
        "iron_concentration_missing",
        "Give the iron concentration in mg Fe/mL or mmol/L.",
        field="iron_mg_per_ml",
        status_code=400,
    )


def lot_register(
    *,
    actor,
    trial: Trial,
    manufacturer: str,
    product: str,
    lot_number: str,
    expiry_date: dt.date,
    core_size_nm: Decimal,
    hydrodynamic_size_nm: Decimal,
    polydispersity_index: Decimal,
    coating: str,
    certificate_of_analysis,
    iron_mg_per_ml: Decimal | None = None,
    iron_mmol_per_l: Decimal | None = None,
) -> NanoparticleLot:
    access.require_trial_role(
        actor, trial=trial, roles=access.TRIAL_RESOURCE_ROLES, action="register nanoparticle lots"
    )
    iron_mg_per_ml, iron_mmol_per_l = _iron_concentrations(iron_mg_per_ml, iron_mmol_per_l)
    lot = NanoparticleLot(
        trial=trial,
        manufacturer=manufacturer,
        product=product,
        lot_number=lot_number,
        expiry_date=expiry_date,
        iron_mg_per_ml=iron_mg_per_ml,
        iron_mmol_per_l=iron_mmol_per_l,
        core_size_nm=core_size_nm,
        hydrodynamic_size_nm=hydrodynamic_size_nm,
        polydispersity_index=polydispersity_index,
        coating=coating,
        certificate_of_analysis=certificate_of_analysis,
        certificate_sha256=sha256_of(certificate_of_analysis),
        qc_status=NanoparticleLot.QcStatus.QUARANTINED,  # every lot waits for QC release
    )
    with transaction.atomic():
        lot.full_clean()
        lot.save()
        _audit(
            actor=actor,
            action=AuditAction.LOT_REGISTERED,
            obj=lot,
            trial_id=trial.pk,
            changes=diff(None, _snapshot(lot)),
        )
    return lot


def lot_set_qc_status(
    *, actor, lot: NanoparticleLot, qc_status: str, reason: str, confirm: bool = False
) -> NanoparticleLot:
    # A lot is shared by every site's batches: only a trial-level role may block or release it.
    access.require_trial_role(
        actor, trial=lot.trial, roles=access.TRIAL_RESOURCE_ROLES, action="change a lot's QC status"
    )
    reason = _require_reason(reason)
    with transaction.atomic():
        lot = NanoparticleLot.objects.select_for_update().get(pk=lot.pk)
        if lot.qc_status == NanoparticleLot.QcStatus.REJECTED:
            raise RuleViolation(
                "lot_rejected", f"Lot {lot.lot_number} was rejected: a rejection is final.", field="qc_status"
            )
        if lot.qc_status == qc_status:
            raise RuleViolation("no_change", f"Lot {lot.lot_number} is already {qc_status}.", field="qc_status")
        if qc_status == NanoparticleLot.QcStatus.RELEASED and lot.expiry_date < timezone.localdate():
            raise RuleViolation("lot_expired", f"Lot {lot.lot_number} expired on {lot.expiry_date}.", field="qc_status")
        if qc_status == NanoparticleLot.QcStatus.REJECTED:
            batches = lot.labelled_batches.count()
            require_confirmation(
                confirm,
                consequences=f"Rejecting lot {lot.lot_number} is final: it can never be "
                f"released again, and the {batches} batch(es) labelled with it at every site can "
                "no longer be released or injected.",
            )
        before = _snapshot(lot, ["qc_status"])
        lot.qc_status = qc_status
        lot.full_clean()
        lot.save(update_fields=["qc_status"])
        _audit(
            actor=actor,
            action=AuditAction.LOT_QC_STATUS_CHANGED,
            obj=lot,
            trial_id=lot.trial_id,
            changes=diff(before, _snapshot(lot, ["qc_status"])),
            reason=reason,
        )
    return lot


def _check_lot_usable(lot: NanoparticleLot, on: dt.date, *, field: str) -> None:
    if lot.qc_status != NanoparticleLot.QcStatus.RELEASED:
        raise RuleViolation(
            "lot_not_released", f"Nanoparticle lot {lot.lot_number} is {lot.qc_status}, not released.", field=field
        )
    _check_lot_unexpired(lot, on, field=field)


def _check_lot_unexpired(lot: NanoparticleLot, on: dt.date, *, field: str) -> None:
    if lot.expiry_date < on:
        raise RuleViolation(
            "lot_expired", f"Nanoparticle lot {lot.lot_number} expired on {lot.expiry_date}.", field=field
        )


# --------------------------------------------------------------------------- cell batches


def _check_identifiers_free_of_mrn(
    donor_subject: Subject | None, chain_of_identity_id: str, donation_id: str, *, field: str
) -> None:
    # 21 CFR 1271.290: the distinct identifier must not carry a record number.
    if donor_subject is None:
        return
    identity = SubjectIdentity.objects.filter(subject=donor_subject).first()
    mrn = identity.medical_record_number.upper() if identity else ""
    if len(mrn) >= 4 and any(mrn in value.upper() for value in (chain_of_identity_id, donation_id)):
        raise RuleViolation(
            "identifier_contains_phi",
            "The chain-of-identity or donation id contains the donor's medical record number.",
            field=field,
            status_code=400,
        )


def _check_labelled_after_manufacture(labelled_at: dt.datetime, manufactured_at: dt.datetime, *, field: str) -> None:
    if labelled_at < manufactured_at:
        raise RuleViolation(
            "labelled_before_manufacture", "Labelling cannot precede manufacture.", field=field, status_code=400
        )


def _check_labelling_lot(lot: NanoparticleLot, batch: CellBatch, labelled_at: dt.datetime) -> None:
    """The lot a batch is labelled with: of the batch's trial, released and unexpired on
    the labelling day (batch_label; batch_correct of the lot or the labelling time)."""
    if lot.trial_id != batch.trial_id:
        raise RuleViolation(
            "trial_mismatch", "The nanoparticle lot is registered for another trial.", field="nanoparticle_lot"
        )
    _check_lot_usable(lot, _local_date(labelled_at, batch.site), field="nanoparticle_lot")


def batch_register(
    *,
    actor,
    site: Site,
    batch_code: str,
    product_type: str,
    chain_of_identity_id: str,
    donation_id: str,
    manufactured_at: dt.datetime,
    cell_count: int,
    viability_percent: Decimal,
    donor_subject: Subject | None = None,
    allogeneic: bool = False,
) -> CellBatch:
    access.require_role(actor, site=site, roles=access.PRODUCT_ROLES, action="register cell batches")
    _not_in_future(manufactured_at, "manufactured_at", "The manufacturing time")
    if donor_subject is not None and donor_subject.site_id != site.pk:
        # Injections need the batch at the recipient's site, and the check below reads the
        # donor's identity: both only make sense for a donor of this site.
        raise RuleViolation(
            "donor_at_other_site",
            f"The donor is not a subject of site {site.code}.",
            field="donor_subject",
            status_code=400,
        )
    _check_identifiers_free_of_mrn(donor_subject, chain_of_identity_id, donation_id, field="chain_of_identity_id")
    batch = CellBatch(
        trial=site.trial,
        site=site,
        batch_code=batch_code,
        product_type=product_type,
        chain_of_identity_id=chain_of_identity_id,
        donation_id=donation_id,
        donor_subject=donor_subject,
        allogeneic=allogeneic,
        manufactured_at=manufactured_at,
        cell_count=cell_count,
        viability_percent=viability_percent,
    )
    with transaction.atomic():
        batch.full_clean()
        batch.save()
        _audit(
            actor=actor,
            action=AuditAction.BATCH_REGISTERED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=site.pk,
            subject_id=donor_subject.pk if donor_subject else None,
            changes=diff(None, _snapshot(batch)),
        )
    return batch


_LABELLING_FIELDS = [
    "nanoparticle_lot",
    "incubation_concentration_ug_fe_per_ml",
    "iron_per_cell_pg",
    "labelling_efficiency_percent",
    "labelled_at",
]


def batch_label(
    *,
    actor,
    batch: CellBatch,
    nanoparticle_lot: NanoparticleLot,
    incubation_concentration_ug_fe_per_ml: Decimal,
    iron_per_cell_pg: Decimal,
    labelling_efficiency_percent: Decimal,
    labelled_at: dt.datetime,
    reason: str,
) -> CellBatch:
    access.require_role(actor, site=batch.site, roles=access.PRODUCT_ROLES, action="record labelling")
    reason = _require_reason(reason)
    _not_in_future(labelled_at, "labelled_at", "The labelling time")
    with transaction.atomic():
        batch = CellBatch.objects.select_for_update(of=("self",)).select_related("site").get(pk=batch.pk)
        if batch.nanoparticle_lot_id is not None:
            raise RuleViolation(
                "batch_already_labelled", f"Batch {batch.batch_code} is already labelled.", field="nanoparticle_lot"
            )
        if batch.release_status == CellBatch.ReleaseStatus.REJECTED:
            raise RuleViolation("batch_rejected", f"Batch {batch.batch_code} was rejected.", field="batch")
        # Judge the lot as it is now, not as the caller last saw it; the lock keeps a
        # concurrent QC change from slipping in between.
        nanoparticle_lot = NanoparticleLot.objects.select_for_update().get(pk=nanoparticle_lot.pk)
        _check_labelling_lot(nanoparticle_lot, batch, labelled_at)
        _check_labelled_after_manufacture(labelled_at, batch.manufactured_at, field="labelled_at")
        before = _snapshot(batch, _LABELLING_FIELDS)
        batch.nanoparticle_lot = nanoparticle_lot
        batch.incubation_concentration_ug_fe_per_ml = incubation_concentration_ug_fe_per_ml
        batch.iron_per_cell_pg = iron_per_cell_pg
        batch.labelling_efficiency_percent = labelling_efficiency_percent
        batch.labelled_at = labelled_at
        batch.full_clean()
        batch.save(update_fields=_LABELLING_FIELDS)
        _audit(
            actor=actor,
            action=AuditAction.BATCH_LABELLED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=batch.site_id,
            changes=diff(before, _snapshot(batch, _LABELLING_FIELDS)),
            reason=reason,
        )
    return batch


def batch_set_release_status(
    *, actor, batch: CellBatch, release_status: str, reason: str, confirm: bool = False
) -> CellBatch:
    access.require_role(actor, site=batch.site, roles=access.PRODUCT_ROLES, action="release or reject batches")
    reason = _require_reason(reason)
    with transaction.atomic():
        batch = (
            CellBatch.objects.select_for_update(of=("self",))
            .select_related("site", "nanoparticle_lot")
            .get(pk=batch.pk)
        )
        if batch.release_status == CellBatch.ReleaseStatus.REJECTED:
            raise RuleViolation(
                "batch_rejected",
                f"Batch {batch.batch_code} was rejected: a rejection is final.",
                field="release_status",
            )
        if batch.release_status == release_status:
            raise RuleViolation(
                "no_change", f"Batch {batch.batch_code} is already {release_status}.", field="release_status"
            )
        if release_status == CellBatch.ReleaseStatus.RELEASED:
            # The released product is the labelled one, so labelling comes first.
            if batch.nanoparticle_lot is None:
                raise RuleViolation(
                    "batch_not_labelled", f"Batch {batch.batch_code} is not labelled yet.", field="release_status"
                )
            _check_lot_usable(batch.nanoparticle_lot, _local_date(timezone.now(), batch.site), field="release_status")
        if release_status == CellBatch.ReleaseStatus.REJECTED:
            require_confirmation(
                confirm,
                consequences=f"Rejecting batch {batch.batch_code} is final: it can never "
                f"be released again and none of its {batch_cells_remaining(batch):,} remaining "
                "cells can be injected.",
            )
        before = _snapshot(batch, ["release_status"])
        batch.release_status = release_status
        batch.full_clean()
        batch.save(update_fields=["release_status"])
        _audit(
            actor=actor,
            action=AuditAction.BATCH_RELEASE_STATUS_CHANGED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=batch.site_id,
            changes=diff(before, _snapshot(batch, ["release_status"])),
            reason=reason,
        )
    return batch


# --------------------------------------------------------------------------- injections


def _require_clinical_member(user, site: Site, field: str, who: str) -> None:
    if not access.roles_at(user, site) & {str(r) for r in access.CLINICAL_ROLES}:
        raise RuleViolation(
            f"{field}_not_at_site", f"The {who} must be a coordinator or investigator at site {site.code}.", field=field
        )


def _require_four_eyes(site: Site, *, administered_by, verified_by) -> None:
    """Two different people, both clinical staff at the site."""
    if administered_by is not None and verified_by is not None and administered_by.pk == verified_by.pk:
        raise RuleViolation(
            "verifier_is_administrator",
            "The verifier must be someone other than the administrator.",
            field="verified_by",
        )
    _require_clinical_member(administered_by, site, "administered_by", "administrator")
    _require_clinical_member(verified_by, site, "verified_by", "verifier")


def _require_verifier_password(*, actor, subject: Subject, batch: CellBatch, verifier, password: str) -> None:
    """The second person proves they are there: their password, counted toward their
    lockout like a sign-in. A refusal is audited (its own transaction) and nothing else
    is written."""
    check = credentials.password_check(user=verifier, password=password, via=credentials.INJECTION_VERIFIER)
    if check.confirmed:
        return
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.INJECTION_VERIFICATION_REFUSED,
            object_type="trials.injection",
            object_id="",
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes={
                "verifier": verifier.get_username(),
                "batch": batch.pk,
                "why": "account locked" if check.locked else "wrong password",
            },
        )
    if check.locked:
        raise RuleViolation(
            check.code,
            f"The verifier {verifier.get_username()} cannot confirm: {check.message} Nothing was recorded.",
            field="verifier_password",
            status_code=429,
        )
    raise RuleViolation(
        "verifier_password_wrong",
        "The verifier's password is wrong: nothing was recorded.",
        field="verifier_password",
        status_code=403,
    )


def _check_administered_after_labelling(batch: CellBatch, administered_at: dt.datetime) -> None:
    if batch.labelled_at is not None and administered_at < batch.labelled_at:
        raise RuleViolation(
            "administered_before_labelling",
            "The injection cannot precede the labelling.",
            field="administered_at",
            status_code=400,
        )


def _check_cells_available(batch: CellBatch, requested: int, *, correcting: int | None = None) -> None:
    """The batch (locked by the caller) holds ``requested`` cells. ``correcting``: the
    count the corrected injection holds now, which is its own to keep."""
    left = batch_cells_remaining(batch) + (correcting or 0)
    if requested > left:
        what = "cells left" if correcting is None else "cells for this injection once the others are counted"
        raise RuleViolation(
            "insufficient_cells",
            f"Batch {batch.batch_code} has {left:,} {what}; {requested:,} requested.",
            field="administered_cells",
        )


def injection_record(
    *,
    actor,
    subject: Subject,
    batch: CellBatch,
    administered_cells: int,
    volume_ml: Decimal,
    route: str,
    anatomical_target: str,
    administered_at: dt.datetime,
    administered_by,
    verified_by,
    verifier_password: str,
) -> Injection:
    """Record an injection; ``verified_by`` confirms the dose with their own password
    (four eyes), checked here so that every interface asks for it."""
    site = subject.site
    access.require_role(actor, site=site, roles=access.INJECTION_ROLES, action="record injections")
    _not_in_future(administered_at, "administered_at", "The administration time")
    _require_four_eyes(site, administered_by=administered_by, verified_by=verified_by)
    if subject.status != Subject.Status.ENROLLED:
        raise RuleViolation(
            "subject_not_enrolled", f"Subject {subject.code} is {subject.status}, not enrolled.", field="subject"
        )
    _require_verifier_password(
        actor=actor, subject=subject, batch=batch, verifier=verified_by, password=verifier_password
    )
    with transaction.atomic():
        # The lock makes "cells remaining" exact: a second injection from this batch
        # waits here until the first one commits.
        batch = CellBatch.objects.select_for_update(of=("self",)).select_related("nanoparticle_lot").get(pk=batch.pk)
        # Consent is read inside the transaction, next to the write it allows.
        assert_scope_active(subject, ConsentScope.IMAGING, at=administered_at)
        if batch.trial_id != subject.trial_id:
            raise RuleViolation("trial_mismatch", "The batch belongs to another trial.", field="batch")
        if batch.site_id != subject.site_id:
            raise RuleViolation(
                "batch_site_mismatch", f"Batch {batch.batch_code} is not held at site {site.code}.", field="batch"
            )
        if not batch.allogeneic and batch.donor_subject_id != subject.pk:
            raise RuleViolation(
                "autologous_mismatch",
                f"Batch {batch.batch_code} is autologous: it may only be given to its own donor.",
                field="batch",
            )
        if batch.release_status != CellBatch.ReleaseStatus.RELEASED:
            raise RuleViolation(
                "batch_not_released",
                f"Batch {batch.batch_code} is {batch.release_status}, not released.",
                field="batch",
            )
        if batch.nanoparticle_lot is None:
            raise RuleViolation("batch_not_labelled", f"Batch {batch.batch_code} is not labelled.", field="batch")
        _check_lot_usable(batch.nanoparticle_lot, _local_date(administered_at, site), field="batch")
        _check_administered_after_labelling(batch, administered_at)
        _check_cells_available(batch, administered_cells)
        injection = Injection(
            subject=subject,
            batch=batch,
            administered_cells=administered_cells,
            volume_ml=volume_ml,
            route=route,
            anatomical_target=anatomical_target,
            administered_at=administered_at,
            administered_by=administered_by,
            verified_by=verified_by,
        )
        injection.full_clean()
        injection.save()
        _audit(
            actor=actor,
            action=AuditAction.INJECTION_RECORDED,
            obj=injection,
            trial_id=subject.trial_id,
            site_id=site.pk,
            subject_id=subject.pk,
            changes=diff(None, _snapshot(injection)),
        )
        _signed_visit_changed(subject, actor=actor, reason=f"injection #{injection.pk} recorded after sign-off")
    return injection


# --------------------------------------------------------------------------- corrections
#
# A correction fixes a value that was recorded wrongly (a typo, a misread label). It is
# never silent: a reason is required, the audit event keeps the old and the new value
# (21 CFR 11.10(e), ALCOA+), and the new values pass the rules creation enforces. Rules
# about the *current* state of other records (is the subject still enrolled, is the
# batch still released) are not re-asked: they held when the record was created, and
# a typo in a record of a subject who has since completed must stay correctable.


def _require_correctable(what: str, fields: dict, *, correctable: Iterable[str], locked: dict[str, str]) -> None:
    """Refuse any field outside ``correctable`` before a value is looked at.

    ``locked`` maps a field to why it may not be corrected; any other field is unknown.
    """
    for name in fields:
        if name in correctable:
            continue
        if name in locked:
            raise RuleViolation(
                f"{name}_not_correctable",
                f"The {what}'s {name} cannot be corrected: {locked[name]}",
                field=name,
                status_code=400,
            )
        raise RuleViolation(
            "unknown_field",
            f"A {what} has no correctable field {name!r} (correctable: {', '.join(sorted(correctable))}).",
            field=name,
            status_code=400,
        )


def _require_change(what: str, before: dict, after: dict) -> dict:
    changes = diff(before, after)
    if not changes:
        raise RuleViolation("no_change", f"The correction changes nothing in this {what}.", status_code=400)
    return changes


def _apply(obj, fields: dict) -> None:
    for name, value in fields.items():
        setattr(obj, name, value)


def _in_range(value, low, high, *, field: str, what: str) -> None:
    if value is not None and not (Decimal(low) <= Decimal(value) <= Decimal(high)):
        raise RuleViolation(
            f"{field}_out_of_range",
            f"{what} must be between {low} and {high}; got {value}.",
            field=field,
            status_code=400,
        )


def _positive(value, *, field: str, what: str) -> None:
    if value is not None and not value > 0:
        raise RuleViolation(
            f"{field}_not_positive", f"{what} must be greater than zero; got {value}.", field=field, status_code=400
        )


_IDS = {
    "id": "it is the record's identity.",
    "pk": "it is the record's identity.",
    "created_at": "it is set by the system.",
    "trial": "a record never moves to another trial.",
}


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
    if "enrolment_date" in fields and fields["enrolment_date"] > _local_date(timezone.now(), subject.site):
        raise RuleViolation(
            "enrolment_date_in_future",
            "The enrolment date cannot be in the future.",
            field="enrolment_date",
            status_code=400,
        )
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


_INJECTION_CORRECTABLE = (
    "administered_cells",
    "volume_ml",
    "route",
    "anatomical_target",
    "administered_at",
    "administered_by",
    "verified_by",
)
_INJECTION_LOCKED = {
    **_IDS,
    "subject": "an injection given to the wrong subject is a deviation to report, not a typo.",
    "batch": "the batch carries the chain of identity; a wrong batch is a deviation to report, not a typo.",
}


def injection_correct(*, actor, injection: Injection, reason: str, verifier_password: str = "", **fields) -> Injection:
    """Correct an injection. Naming another verifier needs that person's password
    (``verifier_password``), as recording does: nobody is made a verifier unasked."""
    subject = injection.subject
    site = subject.site
    access.require_role(actor, site=site, roles=access.INJECTION_ROLES, action="correct injections")
    reason = _require_reason(reason)
    _require_correctable("injection", fields, correctable=_INJECTION_CORRECTABLE, locked=_INJECTION_LOCKED)
    new_verifier = fields.get("verified_by")
    if new_verifier is not None and new_verifier.pk != injection.verified_by_id:
        # Before the transaction: a refusal is audited and counted, and must stay written.
        _require_four_eyes(
            site, administered_by=fields.get("administered_by", injection.administered_by), verified_by=new_verifier
        )
        _require_verifier_password(
            actor=actor, subject=subject, batch=injection.batch, verifier=new_verifier, password=verifier_password
        )
    with transaction.atomic():
        injection = (
            Injection.objects.select_for_update(of=("self",))
            .select_related("subject", "subject__site", "administered_by", "verified_by")
            .get(pk=injection.pk)
        )
        # Lock the batch as injection_record does, so "cells left" is exact against a
        # concurrent injection or correction from the same batch.
        batch = (
            CellBatch.objects.select_for_update(of=("self",))
            .select_related("nanoparticle_lot")
            .get(pk=injection.batch_id)
        )
        stored_cells = injection.administered_cells
        before = _snapshot(injection, fields)
        _apply(injection, fields)
        changes = _require_change("injection", before, _snapshot(injection, fields))
        # Every rule of injection_record that depends on the injection's own values,
        # asked of the values as they will be stored.
        administered_at = injection.administered_at
        _not_in_future(administered_at, "administered_at", "The administration time")
        _require_four_eyes(site, administered_by=injection.administered_by, verified_by=injection.verified_by)
        _positive(injection.administered_cells, field="administered_cells", what="The number of cells")
        _positive(injection.volume_ml, field="volume_ml", what="The volume")
        _check_administered_after_labelling(batch, administered_at)
        if batch.nanoparticle_lot is not None:
            _check_lot_unexpired(batch.nanoparticle_lot, _local_date(administered_at, site), field="administered_at")
        assert_scope_active(subject, ConsentScope.IMAGING, at=administered_at)
        # The stored row still holds the old count, so what is left for this injection is
        # the batch's remainder plus what this injection took before the correction.
        _check_cells_available(batch, injection.administered_cells, correcting=stored_cells)
        injection.full_clean()
        injection.save(update_fields=list(fields))
        _audit(
            actor=actor,
            action=AuditAction.INJECTION_UPDATED,
            obj=injection,
            trial_id=subject.trial_id,
            site_id=site.pk,
            subject_id=subject.pk,
            changes=changes,
            reason=reason,
        )
        _signed_visit_changed(subject, actor=actor, reason=f"injection #{injection.pk} corrected: {reason}")
    return injection


_LOT_CORRECTABLE = (
    "expiry_date",
    "iron_mg_per_ml",
    "iron_mmol_per_l",
    "core_size_nm",
    "hydrodynamic_size_nm",
    "polydispersity_index",
    "coating",
)
_LOT_LOCKED = {
    **_IDS,
    "manufacturer": "manufacturer and lot number identify the lot; register the right lot instead.",
    "product": "the product identifies the lot; register the right lot instead.",
    "lot_number": "manufacturer and lot number identify the lot; register the right lot instead.",
    "certificate_of_analysis": "the certificate and its SHA-256 are the record of analysis; register the right lot.",
    "certificate_sha256": "it is computed from the certificate.",
    "qc_status": "change the QC status through its own action (POST .../qc-status/).",
}


def lot_correct(*, actor, lot: NanoparticleLot, reason: str, **fields) -> NanoparticleLot:
    access.require_trial_role(
        actor, trial=lot.trial, roles=access.TRIAL_RESOURCE_ROLES, action="correct nanoparticle lots"
    )
    reason = _require_reason(reason)
    _require_correctable("nanoparticle lot", fields, correctable=_LOT_CORRECTABLE, locked=_LOT_LOCKED)
    fields = dict(fields)
    # A correction of one concentration recomputes the other, as registration does.
    given = [name for name in ("iron_mg_per_ml", "iron_mmol_per_l") if name in fields]
    if len(given) == 1:
        _positive(fields[given[0]], field=given[0], what="The iron concentration")
        fields["iron_mg_per_ml"], fields["iron_mmol_per_l"] = _iron_concentrations(
            fields.get("iron_mg_per_ml"), fields.get("iron_mmol_per_l")
        )
    with transaction.atomic():
        lot = NanoparticleLot.objects.select_for_update().get(pk=lot.pk)
        before = _snapshot(lot, fields)
        _apply(lot, fields)
        changes = _require_change("nanoparticle lot", before, _snapshot(lot, fields))
        _positive(lot.iron_mg_per_ml, field="iron_mg_per_ml", what="The iron concentration")
        _positive(lot.iron_mmol_per_l, field="iron_mmol_per_l", what="The iron concentration")
        _positive(lot.core_size_nm, field="core_size_nm", what="The core size")
        expected = iron_mmol_per_l_disagreeing(lot.iron_mg_per_ml, lot.iron_mmol_per_l)
        if expected is not None:
            raise RuleViolation(
                "iron_concentrations_disagree",
                f"{lot.iron_mmol_per_l} mmol/L disagrees with "
                f"{lot.iron_mg_per_ml} mg Fe/mL (expected {expected} mmol/L at 55.845 g/mol).",
                field="iron_mmol_per_l",
                status_code=400,
            )
        if lot.hydrodynamic_size_nm < lot.core_size_nm:
            raise RuleViolation(
                "hydrodynamic_smaller_than_core",
                f"The hydrodynamic size ({lot.hydrodynamic_size_nm} "
                f"nm) cannot be smaller than the core ({lot.core_size_nm} nm).",
                field="hydrodynamic_size_nm",
                status_code=400,
            )
        _in_range(lot.polydispersity_index, 0, 1, field="polydispersity_index", what="The polydispersity index")
        if "expiry_date" in fields:
            _lot_expiry_covers_use(lot)
        lot.full_clean()
        lot.save(update_fields=list(fields))
        _audit(
            actor=actor, action=AuditAction.LOT_UPDATED, obj=lot, trial_id=lot.trial_id, changes=changes, reason=reason
        )
    return lot


def _lot_expiry_covers_use(lot: NanoparticleLot) -> None:
    # batch_label and injection_record refuse an expired lot; a corrected expiry must not
    # make a labelling or an injection already recorded one that would have been refused.
    for batch in lot.labelled_batches.select_related("site").prefetch_related("injections"):
        used = [batch.labelled_at, *(i.administered_at for i in batch.injections.all())]
        last = max(_local_date(t, batch.site) for t in used if t is not None)
        if last > lot.expiry_date:
            raise RuleViolation(
                "lot_expiry_before_use",
                f"Lot {lot.lot_number} was used for batch {batch.batch_code} "
                f"on {last}, after the corrected expiry {lot.expiry_date}.",
                field="expiry_date",
            )


_BATCH_CORRECTABLE = (
    "cell_count",
    "viability_percent",
    "manufactured_at",
    "chain_of_identity_id",
    "donation_id",
    "nanoparticle_lot",
    *_LABELLING_FIELDS[1:],
)
_BATCH_LOCKED = {
    **_IDS,
    "site": "a batch never moves to another site.",
    "batch_code": "the batch code is on the product label; register the right batch instead.",
    "product_type": "a batch of another product is another batch; register it instead.",
    "donor_subject": "the donor is the batch's chain of identity; register the right batch instead.",
    "allogeneic": "the donor is the batch's chain of identity; register the right batch instead.",
    "release_status": "release or reject through its own action (POST .../release/).",
}


def batch_correct(*, actor, batch: CellBatch, reason: str, **fields) -> CellBatch:
    access.require_role(actor, site=batch.site, roles=access.PRODUCT_ROLES, action="correct cell batches")
    reason = _require_reason(reason)
    _require_correctable("cell batch", fields, correctable=_BATCH_CORRECTABLE, locked=_BATCH_LOCKED)
    with transaction.atomic():
        batch = (
            CellBatch.objects.select_for_update(of=("self",)).select_related("site", "donor_subject").get(pk=batch.pk)
        )
        injected = batch.cell_count - batch_cells_remaining(batch)
        labelling = [name for name in fields if name in _LABELLING_FIELDS]
        if labelling and batch.nanoparticle_lot_id is None:
            raise RuleViolation(
                "batch_not_labelled",
                f"Batch {batch.batch_code} is not labelled: record the "
                "labelling through its own action (POST .../label/).",
                field=labelling[0],
            )
        if labelling and batch.release_status != CellBatch.ReleaseStatus.PENDING:
            raise RuleViolation(
                "labelling_locked",
                f"Batch {batch.batch_code} is {batch.release_status}: its "
                "labelling is what was released or rejected and cannot change.",
                field=labelling[0],
            )
        chain = [name for name in fields if name in ("chain_of_identity_id", "donation_id")]
        if chain and injected:
            raise RuleViolation(
                "chain_of_identity_locked",
                f"Batch {batch.batch_code} has been injected: its "
                "chain-of-identity ids are on the subject's record and cannot change.",
                field=chain[0],
            )
        before = _snapshot(batch, fields)
        _apply(batch, fields)
        changes = _require_change("cell batch", before, _snapshot(batch, fields))
        # The rules of batch_register and batch_label, asked of the values to be stored.
        _not_in_future(batch.manufactured_at, "manufactured_at", "The manufacturing time")
        _positive(batch.cell_count, field="cell_count", what="The cell count")
        if batch.cell_count < injected:
            raise RuleViolation(
                "cell_count_below_injected",
                f"Batch {batch.batch_code} has already given "
                f"{injected:,} cells; the count cannot be corrected to {batch.cell_count:,}.",
                field="cell_count",
            )
        _in_range(batch.viability_percent, 0, 100, field="viability_percent", what="The viability (%)")
        if chain:
            _check_identifiers_free_of_mrn(
                batch.donor_subject, batch.chain_of_identity_id, batch.donation_id, field=chain[0]
            )
        if batch.labelled_at is not None:
            _not_in_future(batch.labelled_at, "labelled_at", "The labelling time")
            _check_labelled_after_manufacture(
                batch.labelled_at,
                batch.manufactured_at,
                field="labelled_at" if "labelled_at" in fields else "manufactured_at",
            )
            _positive(
                batch.incubation_concentration_ug_fe_per_ml,
                field="incubation_concentration_ug_fe_per_ml",
                what="The incubation concentration",
            )
            _positive(batch.iron_per_cell_pg, field="iron_per_cell_pg", what="The iron per cell")
            _in_range(
                batch.labelling_efficiency_percent,
                0,
                100,
                field="labelling_efficiency_percent",
                what="The labelling efficiency (%)",
            )
        if "nanoparticle_lot" in fields or "labelled_at" in fields:
            if batch.nanoparticle_lot_id is None or batch.labelled_at is None:  # refused above: not labelled
                raise RuntimeError(f"batch {batch.pk} is corrected as labelled without its lot or labelling time")
            lot = NanoparticleLot.objects.select_for_update().get(pk=batch.nanoparticle_lot_id)
            _check_labelling_lot(lot, batch, batch.labelled_at)
        if "labelled_at" in fields and batch.injections.filter(administered_at__lt=batch.labelled_at).exists():
            # Only reachable for a batch released, injected, then set back to pending.
            raise RuleViolation(
                "administered_before_labelling",
                f"Batch {batch.batch_code} was injected before the corrected labelling time.",
                field="labelled_at",
                status_code=400,
            )
        batch.full_clean()
        batch.save(update_fields=list(fields))
        _audit(
            actor=actor,
            action=AuditAction.BATCH_UPDATED,
            obj=batch,
            trial_id=batch.trial_id,
            site_id=batch.site_id,
            changes=changes,
            reason=reason,
        )
    return batch


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


# --------------------------------------------------------------------------- API access


def auth_token_issue(
    *, request, username: str, password: str, otp: str = "", name: str = "API client"
) -> tokens.IssuedToken:
    """Exchange credentials (and, for roles that read PHI, a TOTP code) for a new API
    token of the client ``name`` (scope ``full``; ``compliance.tokens`` has its rules).

    Failed attempts are audited (LOGIN_FAILED, then ACCOUNT_LOCKED) and counted towards
    the lockout by compliance's receivers of Django's and django-axes' signals, so the
    login form and this endpoint share one count.
    """
    # django-axes reads and flags the HttpRequest, not DRF's wrapper around it.
    user = authenticate(getattr(request, "_request", request), username=username, password=password)
    if user is None or not user.is_active:
        raise RuleViolation("invalid_credentials", "Unable to log in with the credentials given.", status_code=400)
    twofactor.require_token_otp(user, otp)
    return tokens.token_issue(user=user, name=name)
