"""Exports: requesting, building (in the worker) and downloading, each audited.

Shape as elsewhere: ``export_<action>(*, actor, ...)``. The worker claims an export
with a conditional update (queued -> running), so a task delivered twice builds once.
The file is written before the row is marked ready, outside any transaction (slow I/O
holds no database lock); a crash between the two leaves a running row and an orphan
file, never a ready row without its file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from audit.context import request_context
from compliance.models import SCAN_EXPORT_KINDS, Export
from config.errors import RuleViolation

logger = logging.getLogger(__name__)


# Kinds each role may request; scope rules below. The DICOM kinds (scope: one scan)
# follow imaging.dicom_export.check_may_export instead.
_TRIAL_WIDE_KINDS = frozenset(Export.Kind.values) - SCAN_EXPORT_KINDS  # monitor, auditor


_SITE_KINDS = frozenset(
    {Export.Kind.REPORT_PDF, Export.Kind.REPORT_CSV, Export.Kind.ODM_XML}
)  # coordinator, investigator


_SPONSOR_KINDS = frozenset({Export.Kind.SPONSOR_DEIDENTIFIED})


def _check_may_request(actor, kind: str, trial, site, subject) -> None:
    from trials.models import Role
    from trials.permissions import access

    trial_roles = {m.role for m in access.active_memberships(actor).filter(trial=trial, site__isnull=True)}
    if trial_roles & {Role.MONITOR, Role.AUDITOR} and kind in _TRIAL_WIDE_KINDS:
        return
    if Role.SPONSOR in trial_roles:
        if kind not in _SPONSOR_KINDS:
            raise RuleViolation("forbidden", "A sponsor may only request the de-identified data set.", field="kind")
        if subject is not None:
            raise RuleViolation(
                "forbidden",
                "A sponsor export covers a trial or a site, not one subject.",
                field="subject",
            )
        return
    scope_site = subject.site if subject is not None else site
    if (
        scope_site is not None
        and kind in _SITE_KINDS
        and access.roles_at(actor, scope_site) & {str(Role.COORDINATOR), str(Role.INVESTIGATOR)}
    ):
        return
    raise RuleViolation("forbidden", "Your role may not request this export for this scope.")


def _scan_scope(kind: str, scan, trial, site, subject):
    """(trial, site, subject) of a scan export, checked against what the caller gave."""
    if kind not in SCAN_EXPORT_KINDS:
        if scan is not None:
            raise RuleViolation("invalid_scope", f"A {kind} export has no scan scope.", field="scan")
        return trial, site, subject
    if scan is None:
        raise RuleViolation("scan_required", f"A {kind} export needs a scan.", field="scan")
    scan_subject = scan.subject
    for given, own, name in (
        (trial, scan_subject.trial, "trial"),
        (site, scan_subject.site, "site"),
        (subject, scan_subject, "subject"),
    ):
        if given is not None and given.pk != own.pk:
            raise RuleViolation("scope_mismatch", f"The scan is outside the {name} given.", field=name)
    return scan_subject.trial, scan_subject.site, scan_subject


def _check_may_export(actor, kind: str, trial, site, subject, scan) -> None:
    """May ``actor`` have this export now? Asked on request and again on retry."""
    if scan is not None:
        from imaging import dicom_export

        dicom_export.check_may_export(actor, scan, deidentified=kind == Export.Kind.DICOM_STUDY_DEIDENTIFIED)
        dicom_export.require_exportable(scan)
    else:
        _check_may_request(actor, kind, trial, site, subject)


def export_request(*, actor, kind: str, trial=None, site=None, subject=None, scan=None) -> Export:
    """Queue an export. ``scan`` (for the DICOM kinds) implies its trial, site and subject."""
    if kind not in Export.Kind.values:
        raise RuleViolation("invalid_kind", f"kind must be one of {', '.join(Export.Kind.values)}.", field="kind")
    trial, site, subject = _scan_scope(kind, scan, trial, site, subject)
    if site is not None and site.trial_id != trial.pk:
        raise RuleViolation("scope_mismatch", "The site belongs to another trial.", field="site")
    if subject is not None and (subject.trial_id != trial.pk or (site is not None and subject.site_id != site.pk)):
        raise RuleViolation("scope_mismatch", "The subject is outside the trial or site given.", field="subject")
    _check_may_export(actor, kind, trial, site, subject, scan)
    export = Export(kind=kind, trial=trial, site=site, subject=subject, scan=scan, requested_by=actor)
    with transaction.atomic():
        export.full_clean()
        export.save()
        record_event(
            actor=actor,
            action=AuditAction.EXPORT_REQUESTED,
            object_type="compliance.export",
            object_id=export.pk,
            trial_id=trial.pk,
            site_id=site.pk if site else None,
            subject_id=subject.pk if subject else None,
            changes={"kind": kind, "scope": export.scope_label, **({"scan": scan.pk} if scan else {})},
        )
    return export


def export_leases_expired_before() -> dt.datetime:
    """A running export's claim not renewed since then belongs to a worker that is gone."""
    return timezone.now() - dt.timedelta(seconds=settings.EXPORT_CLAIM_LEASE_SECONDS)


def _claim(export_id: int, token: str) -> bool:
    """queued -> running for the task ``token``; or take over a running build whose lease ran
    out (its worker died: the sweep queued it again), or that this same task held before the
    broker redelivered it. One conditional UPDATE, so two deliveries build once."""
    now = timezone.now()
    claimable = Q(status=Export.Status.QUEUED) | Q(status=Export.Status.RUNNING) & (
        Q(claim_token=token) | Q(claimed_at__lt=export_leases_expired_before())
    )
    return bool(
        Export.objects.filter(claimable, pk=export_id).update(
            status=Export.Status.RUNNING, started_at=now, claim_token=token, claimed_at=now
        )
    )


def export_renew_claim(*, export_id: int, token: str) -> bool:
    """The heartbeat of a running build: renew its lease while ``token`` holds the claim.
    Not a state change (no audit event). False: the claim is no longer this task's."""
    return bool(
        Export.objects.filter(pk=export_id, status=Export.Status.RUNNING, claim_token=token).update(
            claimed_at=timezone.now()
        )
    )


def stalled_exports(*, queue_idle: bool) -> list[int]:
    """Exports that lost their task: running under a lease that ran out (the worker is gone),
    and, when the ``export`` queue stands empty (``queue_idle``), queued ones untouched for
    ``IMAGING_LOST_MESSAGE_QUIET_SECONDS`` (their message was lost)."""
    stalled = Q(status=Export.Status.RUNNING, claimed_at__lt=export_leases_expired_before())
    if queue_idle:
        quiet = timezone.now() - dt.timedelta(seconds=settings.IMAGING_LOST_MESSAGE_QUIET_SECONDS)
        stalled |= Q(status=Export.Status.QUEUED, created_at__lt=quiet)
    return list(Export.objects.filter(stalled).order_by("pk").values_list("pk", flat=True))


def export_set_progress(export_id: int, stage: str, fraction: float) -> None:
    """Record how far a running export is (its own small write, outside any transaction)."""
    Export.objects.filter(pk=export_id, status=Export.Status.RUNNING).update(
        progress_stage=stage[:32], progress_percent=round(100.0 * min(max(fraction, 0.0), 1.0), 1)
    )


def export_run(export_id: int, *, token: str = "") -> Export | None:
    """Build the export's file for the task ``token``. None when another worker claimed it
    first (or it is done). Only the claim's holder marks it ready or failed: a worker that
    outlived its lease (another build took over) writes nothing."""
    token = token or f"local-{export_id}-{uuid.uuid4().hex}"
    if not _claim(export_id, token):
        return None
    from compliance import reports

    export = Export.objects.select_related("trial", "site", "subject", "scan", "requested_by").get(pk=export_id)
    scope: dict[str, Any] = dict(trial_id=export.trial_id, site_id=export.site_id, subject_id=export.subject_id)
    with request_context(request_id=f"export-{export.pk}"):
        try:
            content, extension, content_type = reports.build(
                export, progress=lambda stage, fraction: export_set_progress(export.pk, stage, fraction)
            )
        except Exception as exc:
            # The traceback goes to the server log only; the row (shown to the requester and
            # to monitors) and the audit trail get words a person can act on.
            logger.exception("export #%s failed", export.pk)
            message = _failure_message(export, exc)
            with transaction.atomic():
                if not Export.objects.filter(pk=export.pk, status=Export.Status.RUNNING, claim_token=token).update(
                    status=Export.Status.FAILED, finished_at=timezone.now(), error=message
                ):
                    _lost_claim(export)
                    return None
                record_event(
                    actor=export.requested_by,
                    action=AuditAction.EXPORT_COMPLETED,
                    object_type="compliance.export",
                    object_id=export.pk,
                    changes={"kind": export.kind, "status": "failed", "error": type(exc).__name__, "message": message},
                    **scope,
                )
            export.refresh_from_db()
            return export
        digest = hashlib.sha256(content).hexdigest()
        name = default_storage.save(
            f"exports/{timezone.now():%Y}/{export.pk}-{export.kind}-{export.trial.protocol_number}.{extension}",
            ContentFile(content),
        )
        with transaction.atomic():
            if not Export.objects.filter(pk=export.pk, status=Export.Status.RUNNING, claim_token=token).update(
                status=Export.Status.READY,
                file=name,
                sha256=digest,
                size_bytes=len(content),
                content_type=content_type,
                finished_at=timezone.now(),
                progress_stage="ready",
                progress_percent=100,
            ):
                default_storage.delete(name)
                _lost_claim(export)
                return None
            record_event(
                actor=export.requested_by,
                action=AuditAction.EXPORT_COMPLETED,
                object_type="compliance.export",
                object_id=export.pk,
                changes={"kind": export.kind, "status": "ready", "sha256": digest, "size_bytes": len(content)},
                **scope,
            )
    export.refresh_from_db()
    return export


def _lost_claim(export: Export) -> None:
    logger.warning("export #%s outlived its lease: a later build owns the row", export.pk)


def _failure_message(export: Export, exc: Exception) -> str:
    """What the requester reads about a failed export: never an exception's own text,
    which may carry server paths or data; a rule's refusal is already meant for people."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, RuleViolation):
        return exc.message[:2000]
    if isinstance(exc, SoftTimeLimitExceeded):
        return (
            f"The export took longer than the time allowed and was stopped (reference export-{export.pk}). "
            "Retry it, or ask for a smaller scope (one site or one subject)."
        )
    return (
        f"The export could not be built because of an internal error (reference export-{export.pk}, "
        "recorded in the server log). Retry it; if it fails again, report that reference."
    )


def export_retry(*, actor, export: Export) -> Export:
    """Queue a failed export again. Only its requester may, and only while the rules of a
    new request still let them have it (a role may have ended since)."""
    if export.requested_by_id != actor.pk:
        raise RuleViolation("forbidden", "Only the person who requested an export may retry it.")
    if export.status != Export.Status.FAILED:
        raise RuleViolation(
            "not_retryable",
            f"Export #{export.pk} is {export.status}: only a failed export can be retried.",
        )
    _check_may_export(actor, export.kind, export.trial, export.site, export.subject, export.scan)
    with transaction.atomic():
        if not Export.objects.filter(pk=export.pk, status=Export.Status.FAILED).update(
            status=Export.Status.QUEUED,
            error="",
            started_at=None,
            finished_at=None,
            progress_stage="",
            progress_percent=0,
        ):
            raise RuleViolation("not_retryable", f"Export #{export.pk} changed meanwhile.")
        record_event(
            actor=actor,
            action=AuditAction.EXPORT_RETRIED,
            object_type="compliance.export",
            object_id=export.pk,
            trial_id=export.trial_id,
            site_id=export.site_id,
            subject_id=export.subject_id,
            changes={
                "kind": export.kind,
                "status": [Export.Status.FAILED, Export.Status.QUEUED],
                "previous_error": export.error,
            },
        )
    export.refresh_from_db()
    return export


def exports_visible_to(user):
    """Exports a user may see: the ones they asked for, and for monitors and auditors
    every export of their trials (who exported what is part of their oversight).
    Only the requester may download one (``export_download``)."""
    from django.db.models import Q

    from compliance.selectors import audit_trial_ids

    if user is None or not user.is_authenticated:
        return Export.objects.none()
    return Export.objects.filter(Q(requested_by=user) | Q(trial_id__in=audit_trial_ids(user))).select_related(
        "trial", "site", "subject", "requested_by"
    )


def export_download(*, actor, export: Export):
    """Open a ready export's file for ``actor`` and audit the download (who, what, from where)."""
    if export.requested_by_id != actor.pk:
        raise RuleViolation("forbidden", "Only the person who requested an export may download it.")
    if export.status != Export.Status.READY:
        raise RuleViolation("export_not_ready", f"Export #{export.pk} is {export.status}.")
    handle = default_storage.open(export.file, "rb")
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.EXPORT_DOWNLOADED,
            object_type="compliance.export",
            object_id=export.pk,
            trial_id=export.trial_id,
            site_id=export.site_id,
            subject_id=export.subject_id,
            changes={"kind": export.kind, "sha256": export.sha256},
        )
    return handle
