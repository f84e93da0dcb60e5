"""PACS destinations and the delivery of a scan's DICOM study to one (C-STORE or STOW-RS).

``dicom_send_request`` checks the rules and writes the DicomSend row and its audit event
in one transaction; the interface that asked queues the task on commit
(``imaging.tasks.queue_send``: pacs queues no task itself); ``dicom_send_run`` (what
the task on the ``export`` queue calls) claims the row with a
conditional update (queued -> running, so a task delivered twice sends once), builds
the study (de-identified when the destination says so), sends it outside any
transaction (slow network I/O holds no lock), and records per-object statuses with a
DICOM_SENT or DICOM_SEND_FAILED event.

Each claim is one attempt (``attempts``). A worker killed mid-send leaves its row
``running``: once the claim is older than the broker's visibility timeout, the redelivered
task (Redis) or the worker start-up sweep (``stalled_sends``, filesystem broker)
takes it over as a new attempt, and the old attempt, should it still be alive, can no
longer write the row. DICOM stores are idempotent by SOP Instance UID, so objects the
killed attempt delivered are stored again, not twice.

A transient failure (the PACS unreachable or busy: connection refused, timeout, HTTP
5xx/408/429, association rejected transiently) puts the row back to ``queued`` with
``last_error`` and no audit event, and the task
retries it after ``send_backoff`` seconds, up to IMAGING_SEND_MAX_RETRIES times. A
permanent failure (HTTP 4xx, an object refused, a build failure), or the last transient
one, is final for its row: the reason and the per-object statuses stay on it, audited
once (DICOM_SEND_FAILED), and a person asks for a new send (a PACS that stored some
objects and refused others should be looked at before sending again).
"""

from __future__ import annotations

import logging
import os
import re

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from audit.context import request_context
from config.errors import RuleViolation
from imaging import dicom_export
from imaging.models import DicomSend, PacsDestination, Scan
from imaging.services.scan_claims import claims_stale_before, quiet_since

log = logging.getLogger(__name__)

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class TransientSendFailure(RuntimeError):
    """The reason the send task retries (Celery's Retry carries it); never raised by pacs."""


def pacs_destination_register(
    *,
    actor,
    trial,
    name: str,
    protocol: str,
    host: str = "",
    port: int | None = None,
    called_ae: str = "",
    calling_ae: str = "MPITRIALS",
    base_url: str = "",
    username: str = "",
    password_env: str = "",
    deidentify: bool = True,
    active: bool = True,
) -> PacsDestination:
    """Register a destination of ``trial``: platform administrators (superusers) or the system."""
    if actor is not None and not (actor.is_active and actor.is_superuser):
        raise RuleViolation("forbidden", "Only a platform administrator may register a PACS destination.")
    if password_env and not ENV_NAME.match(password_env):
        raise RuleViolation(
            "invalid_password_env",
            "password_env is the NAME of an environment variable (A-Z, 0-9, _), never the password itself.",
            field="password_env",
        )
    destination = PacsDestination(
        trial=trial,
        name=name,
        protocol=protocol,
        host=host,
        port=port,
        called_ae=called_ae,
        calling_ae=calling_ae,
        base_url=base_url,
        username=username,
        password_env=password_env,
        deidentify=deidentify,
        active=active,
        created_by=actor,
    )
    with transaction.atomic():
        destination.full_clean()
        destination.save()
        record_event(
            actor=actor,
            action=AuditAction.PACS_DESTINATION_REGISTERED,
            object_type="imaging.pacsdestination",
            object_id=destination.pk,
            trial_id=trial.pk,
            changes={
                "name": name,
                "protocol": protocol,
                "target": destination.describe(),
                "deidentify": deidentify,
                "username": username,
                "password_env": password_env,
            },
        )
    return destination


def _scope(scan: Scan) -> dict:
    return {"trial_id": scan.subject.trial_id, "site_id": scan.subject.site_id, "subject_id": scan.subject_id}


def dicom_send_request(*, actor, scan: Scan, destination: PacsDestination) -> DicomSend:
    """Queue the delivery of ``scan``'s study to ``destination``.

    Sending is an act of the site or the monitor, never of a sponsor or auditor: the
    roles that may take the identified study out (``dicom_export.check_may_export``),
    whether or not this destination de-identifies."""
    if destination.trial_id != scan.subject.trial_id or not destination.active:
        raise RuleViolation("not_found", "No such active PACS destination in the scan's trial.", field="destination")
    dicom_export.check_may_export(actor, scan, deidentified=False)
    dicom_export.require_exportable(scan)
    send = DicomSend(scan=scan, destination=destination, requested_by=actor, deidentified=destination.deidentify)
    with transaction.atomic():
        send.full_clean()
        send.save()
        record_event(
            actor=actor,
            action=AuditAction.DICOM_SEND_REQUESTED,
            object_type="imaging.dicomsend",
            object_id=send.pk,
            changes={
                "scan": scan.pk,
                "destination": destination.name,
                "target": destination.describe(),
                "deidentified": send.deidentified,
            },
            **_scope(scan),
        )
    return send


def _claim(send_id: int) -> bool:
    """queued -> running; or take over a running claim older than the lease (its worker was
    killed mid-send: Redis redelivers the task, the start-up sweep queues it again)."""
    lost = Q(status=DicomSend.Status.RUNNING, started_at__lt=claims_stale_before())
    return bool(
        DicomSend.objects.filter(Q(status=DicomSend.Status.QUEUED) | lost, pk=send_id).update(
            status=DicomSend.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1
        )
    )


def stalled_sends() -> list[int]:
    """The sends whose task was lost with its worker (the filesystem broker has no
    redelivery): running longer than the lease, or queued and never tried for a minute.
    A send waiting for a retry is queued with attempts > 0; its task holds the countdown.
    ``tasks.recover_stalled_sends`` queues them again."""
    return list(
        DicomSend.objects.filter(
            Q(status=DicomSend.Status.RUNNING, started_at__lt=claims_stale_before())
            | Q(status=DicomSend.Status.QUEUED, attempts=0, created_at__lt=quiet_since())
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def send_backoff(retry: int) -> int:
    """Seconds before retry number ``retry`` (0 for the first): 10, 20, 40, ... at most 900."""
    return min(2**retry * 10, 900)


def send_retry_countdown(send: DicomSend) -> int | None:
    """The task's retry decision: seconds to wait before the next attempt of ``send``,
    or None when there is none to make (sent, failed for good, or running elsewhere)."""
    if send.status != DicomSend.Status.QUEUED or send.attempts == 0:
        return None
    return send_backoff(send.attempts - 1)


def _mine(send: DicomSend):
    """The row, while this attempt still holds the claim (none after a takeover)."""
    return DicomSend.objects.filter(pk=send.pk, status=DicomSend.Status.RUNNING, attempts=send.attempts)


def _outlived(send: DicomSend) -> None:
    log.warning("DICOM send #%s attempt %s outlived its lease: a later attempt owns the row", send.pk, send.attempts)


def _progress(send_id: int, stage: str, fraction: float) -> None:
    DicomSend.objects.filter(pk=send_id, status=DicomSend.Status.RUNNING).update(
        progress_stage=stage[:32], progress_percent=round(100.0 * min(max(fraction, 0.0), 1.0), 1)
    )


def _deliver(destination: PacsDestination, datasets):
    from imaging.dicom import DicomSendError, SendResult, send_cstore, send_stowrs

    if destination.protocol == PacsDestination.Protocol.DICOM:
        if destination.port is None:
            raise DicomSendError(f"PACS destination {destination.name!r} has no port", SendResult(destination.name))
        return send_cstore(
            datasets,
            destination.host,
            destination.port,
            called_ae=destination.called_ae,
            calling_ae=destination.calling_ae,
        )
    auth = None
    if destination.username:
        password = os.environ.get(destination.password_env, "") if destination.password_env else ""
        if destination.password_env and not password:
            raise RuleViolation(
                "password_missing",
                f"The environment variable {destination.password_env} (the "
                f"password of destination {destination.name!r}) is not set on this worker.",
            )
        auth = (destination.username, password)
    return send_stowrs(datasets, destination.base_url, auth=auth)


def _statuses(result) -> list[dict]:
    return [
        {
            "sop_class_uid": o.sop_class_uid,
            "sop_instance_uid": o.sop_instance_uid,
            "ok": o.ok,
            "status": o.status,
            "detail": o.detail,
        }
        for o in result.objects
    ]


def dicom_send_run(send_id: int, *, max_retries: int | None = None) -> DicomSend | None:
    """Build and send: one attempt. None when another worker claimed the row first (or
    it is done). After a transient failure with retries left (``max_retries``, default
    IMAGING_SEND_MAX_RETRIES) the row comes back ``queued``: ``send_retry_countdown``."""
    if not _claim(send_id):
        return None
    from imaging.dicom import DicomSendError

    max_retries = settings.IMAGING_SEND_MAX_RETRIES if max_retries is None else max_retries
    send = DicomSend.objects.select_related(
        "scan__subject__trial", "scan__subject__site", "destination", "requested_by"
    ).get(pk=send_id)
    destination = send.destination
    with request_context(request_id=f"dicom-send-{send.pk}"):
        statuses, error, transient = [], "", False
        try:
            build = dicom_export.deidentified_study_for_scan if send.deidentified else dicom_export.study_for_scan
            datasets = build(send.scan, progress=lambda stage, f: _progress(send.pk, stage, f * 0.8))
            _progress(send.pk, "sending", 0.85)
            statuses = _statuses(_deliver(destination, datasets))
        except DicomSendError as exc:
            statuses, error, transient = _statuses(exc.result), str(exc), exc.transient
        except Exception as exc:  # a build failure or a missing password: recorded, not retried
            log.exception("DICOM send #%s failed", send.pk)
            error = f"{type(exc).__name__}: {exc}"
        ok = not error
        if not ok and transient and send.attempts <= max_retries:
            # Back to queued for the task's retry; the attempt is on the row, not in the audit trail.
            delay = send_backoff(send.attempts - 1)
            if not _mine(send).update(
                status=DicomSend.Status.QUEUED,
                object_statuses=statuses,
                last_error=error[:2000],
                progress_stage=f"retry {send.attempts} in {delay} s"[:32],
                progress_percent=0,
            ):
                _outlived(send)
                return None
            log.warning(
                "DICOM send #%s attempt %s failed (transient), retrying in %s s: %s",
                send.pk,
                send.attempts,
                delay,
                error,
            )
            send.refresh_from_db()
            return send
        with transaction.atomic():
            if not _mine(send).update(
                status=DicomSend.Status.SENT if ok else DicomSend.Status.FAILED,
                object_statuses=statuses,
                error=error[:2000],
                finished_at=timezone.now(),
                progress_stage="sent" if ok else "failed",
                progress_percent=100 if ok else 0,
                **({} if ok else {"last_error": error[:2000]}),
            ):
                _outlived(send)
                return None
            record_event(
                actor=send.requested_by,
                action=AuditAction.DICOM_SENT if ok else AuditAction.DICOM_SEND_FAILED,
                object_type="imaging.dicomsend",
                object_id=send.pk,
                changes={
                    "scan": send.scan_id,
                    "destination": destination.name,
                    "target": destination.describe(),
                    "deidentified": send.deidentified,
                    "attempts": send.attempts,
                    "objects": [
                        {"sop_instance_uid": s["sop_instance_uid"], "ok": s["ok"], "status": s["status"]}
                        for s in statuses
                    ],
                    **({"error": error[:500], "transient": transient} if error else {}),
                },
                **_scope(send.scan),
            )
    send.refresh_from_db()
    return send
