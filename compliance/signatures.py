"""Electronic signatures: what can be signed, signing, and checking that what was
signed is still what is stored (21 CFR 11.50, 11.70, 11.200).

A *signable kind* is a model label and a function that returns the record's canonical
content as plain JSON values. The signature keeps the SHA-256 of that content's
canonical bytes (sorted keys, no whitespace, UTF-8: the audit trail's own form), so a
later change to any signed value, or a record added to a signed visit, changes the hash:
the service that makes the change marks the signature invalid and audits it in its own
transaction (``signature_invalidate_if_changed``, reached through
``audit.chain.record_change``); ``signatures_verify`` re-checks for display and writes
nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import credentials
from audit.actions import AuditAction
from audit.chain import record_event, to_jsonable
from audit.models import AuditEvent
from compliance.models import Signature
from config.errors import RuleViolation

# Events that read or sign a record, and so never explain why its content changed.
_NOT_CHANGES = {
    AuditAction.IDENTITY_READ,
    AuditAction.SIGNATURE_APPLIED,
    AuditAction.SIGNATURE_INVALIDATED,
    AuditAction.SIGNATURE_REFUSED,
    AuditAction.FILE_DOWNLOADED,
    AuditAction.EXPORT_REQUESTED,
    AuditAction.EXPORT_COMPLETED,
    AuditAction.EXPORT_DOWNLOADED,
}


@dataclass(frozen=True)
class Scope:
    trial_id: int
    site_id: int | None
    subject_id: int | None


@dataclass(frozen=True)
class SignableKind:
    model_label: str  # "trials.Subject"
    name: str  # what the signer signs, in people's words
    content: Callable  # obj -> dict of plain values
    scope: Callable  # obj -> Scope
    describe: Callable  # obj -> short label for the manifest

    @property
    def model(self):
        # Looked up at call time: a kind may be registered before its model exists.
        return apps.get_model(self.model_label)


_registry: dict[str, SignableKind] = {}


def register(kind: SignableKind) -> None:
    _registry[kind.model_label.lower()] = kind


def signable_labels() -> list[str]:
    """The model labels of the kinds of record that can be signed, e.g. ``trials.subject``."""
    return sorted(_registry)


def kind_for_label(label: str) -> SignableKind:
    """The signable kind for a model label like ``trials.subject`` (any case)."""
    kind = _registry.get((label or "").lower())
    if kind is None:
        raise RuleViolation(
            "not_signable",
            f"{label!r} is not a kind of record that can be signed (signable: {', '.join(sorted(_registry))}).",
            field="object_type",
        )
    try:
        _ = kind.model  # resolving the model class raises LookupError until its app is installed
    except LookupError:
        raise RuleViolation("not_signable", f"{label!r} is not available yet.", field="object_type") from None
    return kind


def kind_for(obj) -> SignableKind:
    return kind_for_label(obj._meta.label_lower)


def canonical_content(obj) -> bytes:
    """Sorted keys, no whitespace, UTF-8; dates, decimals and times as the audit trail
    writes them (``to_jsonable``). Never change this form: stored hashes depend on it."""
    return orjson.dumps(to_jsonable(kind_for(obj).content(obj)), option=orjson.OPT_SORT_KEYS)


def content_sha256(obj) -> str:
    return hashlib.sha256(canonical_content(obj)).hexdigest()


# --------------------------------------------------------------------------- the kinds


def _subject_visit_content(subject) -> dict:
    """Subject + consents + injections: everything a visit sign-off vouches for.
    Identity (PHI) is not part of it: the signature is on the clinical record."""
    consents = [
        {
            "id": c.pk,
            "document_version": c.document.version,
            "document_sha256": c.document.sha256,
            "scopes": c.scopes,
            "signed_at": c.signed_at,
            "obtained_by": c.obtained_by.get_username(),
            "withdrawn_at": c.withdrawn_at,
            "withdrawn_scopes": c.withdrawn_scopes,
            "withdrawal_reason": c.withdrawal_reason,
        }
        for c in subject.consents.select_related("document", "obtained_by").order_by("id")
    ]
    injections = [
        {
            "id": i.pk,
            "batch_code": i.batch.batch_code,
            "chain_of_identity_id": i.batch.chain_of_identity_id,
            "donation_id": i.batch.donation_id,
            "administered_cells": i.administered_cells,
            "volume_ml": i.volume_ml,
            "route": i.route,
            "anatomical_target": i.anatomical_target,
            "administered_at": i.administered_at,
            "administered_by": i.administered_by.get_username(),
            "verified_by": i.verified_by.get_username(),
        }
        for i in subject.injections.select_related("batch", "administered_by", "verified_by").order_by("id")
    ]
    return {
        "kind": "subject_visit",
        "subject": {
            "id": subject.pk,
            "code": subject.code,
            "trial": subject.trial.protocol_number,
            "site": subject.site.code,
            "enrolment_date": subject.enrolment_date,
            "status": subject.status,
        },
        "consents": consents,
        "injections": injections,
    }


def _subject_scope(subject) -> Scope:
    return Scope(subject.trial_id, subject.site_id, subject.pk)


def _reconstruction_content(reconstruction) -> dict:
    scan = reconstruction.scan
    measurements = [
        {
            "roi": m.roi_name,
            "kind": m.roi_kind,
            "iron_ng": m.iron_ng,
            "uncertainty_ng": m.uncertainty_ng,
            "cell_count": m.cell_count,
            "retention_percent": m.retention_percent,
            "off_target_percent": m.off_target_percent,
            "detection_limit_ng": m.detection_limit_ng,
            "detected": m.detected,
            "voxels": m.voxels,
        }
        for m in reconstruction.measurements.order_by("roi_id")
    ]
    return {
        "kind": "reconstruction_results",
        "reconstruction": {
            "id": reconstruction.pk,
            "scan": scan.pk,
            "attempt": reconstruction.attempt,
            "scan_sha256": scan.sha256,
            "input_sha256": reconstruction.input_sha256,
            "system_matrix_sha256": reconstruction.system_matrix_sha256,
            "result_sha256": reconstruction.sha256,
            "params": reconstruction.params,
            "software_version": reconstruction.software_version,
        },
        "measurements": measurements,
    }


def _reconstruction_scope(reconstruction) -> Scope:
    subject = reconstruction.scan.subject
    return Scope(subject.trial_id, subject.site_id, subject.pk)


def register_builtin_kinds() -> None:
    register(
        SignableKind(
            "trials.Subject", "subject visit", _subject_visit_content, _subject_scope, lambda s: f"subject {s.code}"
        )
    )
    # The imaging models are being written; the kind resolves its model when used.
    register(
        SignableKind(
            "imaging.Reconstruction",
            "reconstruction results",
            _reconstruction_content,
            _reconstruction_scope,
            lambda r: f"reconstruction #{r.pk} of scan #{r.scan_id}",
        )
    )


# --------------------------------------------------------------------------- services


def _printed_name(user) -> str:
    return (user.get_full_name() or "").strip() or user.get_username()


def _manifest(*, printed_name: str, username: str, signed_at, meaning: str, what: str, digest: str) -> str:
    # 11.50: printed name, date and time, meaning; shown with every display of the record.
    return (
        f"Electronically signed by {printed_name} ({username}) on "
        f"{signed_at:%Y-%m-%d %H:%M:%S} UTC. Meaning: {Signature.Meaning(meaning).label}. "
        f"Record: {what}. Content SHA-256: {digest}."
    )


def signatures_of(obj):
    ct = ContentType.objects.get_for_model(obj)
    return Signature.objects.filter(content_type=ct, object_id=str(obj.pk)).select_related("signer")


def signature_apply(*, signer, password: str, obj, meaning: str) -> Signature:
    """Sign ``obj`` as ``signer`` after asking for the password again (11.200(a)(1))."""
    from trials.models import Role, Site
    from trials.permissions import access

    kind = kind_for(obj)
    scope = kind.scope(obj)
    if meaning not in Signature.Meaning.values:
        raise RuleViolation(
            "invalid_meaning",
            f"Meaning must be one of {', '.join(Signature.Meaning.values)}.",
            field="meaning",
        )
    site = Site.objects.get(pk=scope.site_id) if scope.site_id else None
    if site is None or str(Role.INVESTIGATOR) not in access.roles_at(signer, site):
        raise RuleViolation("forbidden", "Only an investigator at the record's site may sign it.")
    # Counted toward the signer's lockout like a sign-in (11.300(d)): no password oracle.
    check = credentials.password_check(user=signer, password=password, via=credentials.E_SIGNATURE)
    if not check.confirmed:
        # The refusal is itself a fact for the trail (11.300(d)): commit it, sign nothing.
        with transaction.atomic():
            _record(
                signer,
                AuditAction.SIGNATURE_REFUSED,
                obj,
                scope,
                changes={"meaning": meaning, "why": "account locked" if check.locked else "wrong password"},
            )
        if check.locked:
            raise RuleViolation(check.code, f"{check.message} Nothing was signed.", field="password")
        raise RuleViolation("signature_refused", "The password is wrong: nothing was signed.", field="password")
    signed_at = timezone.now()
    digest = content_sha256(obj)
    signature = Signature(
        signer=signer,
        signer_username=signer.get_username(),
        printed_name=_printed_name(signer),
        meaning=meaning,
        signed_at=signed_at,
        content_type=ContentType.objects.get_for_model(obj),
        object_id=str(obj.pk),
        kind=kind.name,
        content_sha256=digest,
        trial_id=scope.trial_id,
        site_id=scope.site_id,
        subject_id=scope.subject_id,
        manifest=_manifest(
            printed_name=_printed_name(signer),
            username=signer.get_username(),
            signed_at=signed_at,
            meaning=meaning,
            what=kind.describe(obj),
            digest=digest,
        ),
    )
    with transaction.atomic():
        signature.full_clean()
        signature.save()
        event = _record(
            signer,
            AuditAction.SIGNATURE_APPLIED,
            obj,
            scope,
            changes={
                "signature": signature.pk,
                "meaning": meaning,
                "content_sha256": digest,
                "printed_name": signature.printed_name,
            },
            sealed=True,  # its sequence is the signature's audit_sequence, in this transaction
        )
        Signature.objects.filter(pk=signature.pk).update(audit_sequence=event.sequence)
        signature.audit_sequence = event.sequence
    return signature


def _record(actor, action: AuditAction, obj, scope: Scope, *, changes: dict, **options) -> AuditEvent:
    """The audit event of a signature operation on ``obj``, filed under its record's scope."""
    return record_event(
        actor=actor,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=obj.pk,
        trial_id=scope.trial_id,
        site_id=scope.site_id,
        subject_id=scope.subject_id,
        changes=changes,
        **options,
    )


def _what_changed(signature: Signature) -> str:
    if signature.subject_id is None or signature.audit_sequence is None:
        return "the signed content changed after signing"
    # The change's own event may still wait to be chained (no sequence yet: audit.chain),
    # and is then the newest.
    event = (
        AuditEvent.objects.filter(subject_id=signature.subject_id)
        .filter(Q(sequence__gt=signature.audit_sequence) | Q(sequence=None))
        .exclude(action__in=[int(a) for a in _NOT_CHANGES])
        .order_by(F("sequence").desc(nulls_first=True), "-id")
        .first()
    )
    if event is None:
        return "the signed content changed after signing"
    because = f": {event.reason}" if event.reason else ""
    return (
        f"the signed content changed after signing ({event.action_name} by "
        f"{event.actor_username or 'the system'}, "
        f"{'event #' + str(event.sequence) if event.sequence else 'its audit event'}{because})"
    )


def _invalidate(obj, kind, signature: Signature, *, actor, why: str, changes: dict) -> bool:
    """Mark one valid signature invalid for ``why`` and audit it, in one transaction.
    Conditional update: two callers at once invalidate (and audit) it once; False for
    the one that found it already invalid."""
    with transaction.atomic():
        changed = Signature.objects.filter(pk=signature.pk, valid=True).update(
            valid=False, invalidated_at=timezone.now(), invalidation_reason=why
        )
        if not changed:
            return False
        _record(
            actor,
            AuditAction.SIGNATURE_INVALIDATED,
            obj,
            kind.scope(obj),
            changes={"signature": signature.pk, "valid": [True, False], "signed_sha256": signature.content_sha256}
            | changes,
            reason=why,
        )
    signature.refresh_from_db()
    return True


def signature_invalidate_if_changed(obj, *, actor=None, reason: str = "") -> list[Signature]:
    """Mark every valid signature on ``obj`` whose content hash no longer matches as
    invalid, and audit each. Edit services call it after a change (``record_change``), the
    report's build before it lists signatures; a read never does (``signatures_verify``).
    Returns the signatures invalidated now."""
    try:
        kind = kind_for(obj)
    except RuleViolation:
        return []
    valid = list(signatures_of(obj).filter(valid=True))
    if not valid:
        return []
    digest = content_sha256(obj)
    return [
        signature
        for signature in valid
        if signature.content_sha256 != digest
        and _invalidate(
            obj,
            kind,
            signature,
            actor=actor,
            why=reason or _what_changed(signature),
            changes={"current_sha256": digest},
        )
    ]


def signature_invalidate_all(obj, *, actor=None, reason: str) -> list[Signature]:
    """Mark every valid signature on ``obj`` invalid, and audit each, although its content
    is unchanged: the record now stands for another subject or time point (a re-filed
    scan's reconstructions), so what the signer vouched for is no longer what it says.
    Called through ``audit.chain.record_context_change``. Returns those invalidated now."""
    try:
        kind = kind_for(obj)
    except RuleViolation:
        return []
    why = f"the signed record was re-filed: {reason}"
    return [
        signature
        for signature in signatures_of(obj).filter(valid=True)
        if _invalidate(obj, kind, signature, actor=actor, why=why, changes={})
    ]


def signatures_verify(obj, *, actor=None) -> list[Signature]:
    """Every signature on ``obj``, the valid ones re-checked against its content, for display.

    A read writes nothing (a GET never changes data): a change made through a service has
    already invalidated the signature in its own transaction (``audit.chain.record_change``).
    A stored valid signature whose hash no longer matches (the content changed outside the
    services) is shown invalid, ``content_changed`` set, and stays valid in the database
    until the report's re-check (``signature_invalidate_if_changed``) records it.
    ``actor`` is kept for the callers; nothing is recorded in their name."""
    signatures = list(signatures_of(obj))
    if not any(s.valid for s in signatures):
        return signatures
    try:
        digest = content_sha256(obj)
    except RuleViolation:
        return signatures
    for signature in signatures:
        signature.content_changed = signature.valid and signature.content_sha256 != digest  # for display
        if signature.content_changed:
            # In memory only, for the page or the API answer: never saved from here.
            signature.valid = False
            signature.invalidation_reason = _what_changed(signature)
    return signatures
