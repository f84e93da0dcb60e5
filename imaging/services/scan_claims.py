"""The scan state machine: claims, outcomes, failures, retries and the stalled-scan sweep.

A worker claims a scan with a conditional UPDATE (healthchecks' habit) and records its
outcome only while its claim token still holds.
"""

from __future__ import annotations

import datetime as dt
import os
import re

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.actions import AuditAction
from config.errors import RuleViolation
from imaging import uploads
from imaging.models import (
    SCAN_TRANSITIONS,
    Scan,
    ScanStatus,
)
from imaging.services._common import _audit_scan
from imaging.services.scan_uploads import UPLOAD_ROLES
from trials.permissions import access


def _check_transition(old: str, new: str) -> None:
    if new not in SCAN_TRANSITIONS[old]:
        raise RuleViolation("invalid_transition", f"A scan cannot go from {old} to {new}.")


# A PACS send's claim whose worker is gone: older than the broker's visibility timeout. A
# message never picked up (the filesystem broker loses the tasks of a killed worker): its
# row untouched for a minute.
LOST_MESSAGE_QUIET_SECONDS = 60


def claims_stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT)


def quiet_since() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=LOST_MESSAGE_QUIET_SECONDS)


def scan_leases_expired_before() -> dt.datetime:
    """A scan claim not renewed since then belongs to a worker that is gone (its lease,
    ``IMAGING_CLAIM_LEASE_SECONDS``, ran out: a live task renews it every quarter of that)."""
    return timezone.now() - dt.timedelta(seconds=settings.IMAGING_CLAIM_LEASE_SECONDS)


CLAIMED_STATUSES = (ScanStatus.VALIDATING, ScanStatus.RECONSTRUCTING)


def scan_renew_claim(*, scan_id: int, token: str) -> bool:
    """The heartbeat of a running step: renew its lease while ``token`` holds the claim.
    Not a state change (no audit event). False: the claim is no longer this task's."""
    return bool(
        Scan.objects.filter(pk=scan_id, claim_token=token, status__in=CLAIMED_STATUSES).update(
            claimed_at=timezone.now()
        )
    )


def scan_claim(*, scan_id: int, from_status: str, to_status: str, token: str) -> Scan | None:
    """Move a scan from ``from_status`` to ``to_status`` for the task ``token``.

    One conditional UPDATE: it succeeds when the scan is still in ``from_status``, or
    already in ``to_status`` under the same token (the broker redelivered this task
    after its worker died) or under a claim whose lease ran out (its worker is gone:
    ``scan_leases_expired_before``). Each claim is a new attempt. None: another worker has it, or the
    step is done; the caller exits quietly.
    """
    _check_transition(from_status, to_status)
    now = timezone.now()
    stale = scan_leases_expired_before()
    with transaction.atomic():
        claimable = Q(status=from_status) | Q(status=to_status) & (Q(claim_token=token) | Q(claimed_at__lt=stale))
        previous = Scan.objects.filter(pk=scan_id).values_list("status", flat=True).first()
        updated = Scan.objects.filter(claimable, pk=scan_id).update(
            status=to_status,
            attempt=F("attempt") + 1,
            claim_token=token,
            claimed_at=now,
            progress_stage=to_status,
            progress_percent=0,
            updated_at=now,
        )
        if not updated:
            return None
        scan = Scan.objects.select_related(
            "subject", "injection__batch__nanoparticle_lot", "scanner", "system_matrix"
        ).get(pk=scan_id)
        _audit_scan(
            actor=None,
            action=AuditAction.SCAN_STATUS_CHANGED,
            scan=scan,
            changes={"status": [previous, to_status], "attempt": [scan.attempt - 1, scan.attempt]},
            reason="" if previous == from_status else "claimed again: the previous worker's task was redelivered",
        )
    return scan


# The MDF's own top-level groups: a dataset path under them (/measurement/data) tells the
# site what to fix in its file, and stays in a reason.
_MDF_GROUPS = (
    "study",
    "experiment",
    "scanner",
    "tracer",
    "acquisition",
    "measurement",
    "calibration",
    "reconstruction",
    "custom",
)


_SERVER_PATH = re.compile(r"(?<![\w./-])/(?!(?:{})\b)[\w.@+~-]+(?:/[\w.@+~-]*)+".format("|".join(_MDF_GROUPS)))


def _without_server_paths(value, scan: Scan):
    """``value`` (a reason, or a report of them) with no path of the server's file system.

    recon and h5py name the file they opened; that path tells a site nothing and an
    attacker where the files are kept. The scan's own file becomes "the uploaded file",
    any other absolute path "[server path]"."""
    if isinstance(value, dict):
        return {key: _without_server_paths(item, scan) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_server_paths(item, scan) for item in value]
    if not isinstance(value, str) or "/" not in value:
        return value
    if scan.file:
        stored = uploads.media_path(scan.file)
        for path in sorted({str(stored), os.path.realpath(stored)}, key=len, reverse=True):
            value = value.replace(path, "the uploaded file")
    for root in sorted({str(settings.MEDIA_ROOT), os.path.realpath(settings.MEDIA_ROOT)}, key=len, reverse=True):
        value = value.replace(root, "[server path]")
    return _SERVER_PATH.sub("[server path]", value)


def _finish(scan: Scan, token: str, new_status: str, *, fields: dict, reason: str = "") -> bool:
    """Conditional move out of the claimed status; False when the claim was lost.

    The one place a scan's reason is stored (status_reason, validation report, audit
    event): server paths are taken out here, whatever produced the message."""
    old = scan.status
    _check_transition(old, new_status)
    reason = _without_server_paths(reason, scan)
    fields = {
        name: _without_server_paths(value, scan) if name in ("status_reason", "validation_report") else value
        for name, value in fields.items()
    }
    updated = Scan.objects.filter(pk=scan.pk, status=old, claim_token=token, attempt=scan.attempt).update(
        status=new_status, updated_at=timezone.now(), **fields
    )
    if not updated:
        return False
    _audit_scan(
        actor=None,
        action=AuditAction.SCAN_STATUS_CHANGED,
        scan=scan,
        changes={"status": [old, new_status]},
        reason=reason,
    )
    scan.status = new_status
    for key, value in fields.items():
        setattr(scan, key, value)
    return True


def scan_set_progress(*, scan: Scan, token: str, stage: str, fraction: float) -> None:
    # Not a state change: no audit event, and only while this task holds the claim (whose
    # lease each report renews, as the heartbeat does).
    Scan.objects.filter(pk=scan.pk, claim_token=token, attempt=scan.attempt).update(
        progress_stage=stage[:32],
        progress_percent=round(max(0.0, min(1.0, fraction)) * 100, 1),
        claimed_at=timezone.now(),
    )


def scan_fail(*, scan_id: int, token: str, reason: str, retryable: bool) -> bool:
    with transaction.atomic():
        scan = Scan.objects.select_related("subject").get(pk=scan_id)
        if ScanStatus.FAILED not in SCAN_TRANSITIONS[scan.status] or scan.claim_token != token:
            return False
        return _finish(
            scan,
            token,
            ScanStatus.FAILED,
            fields={"status_reason": reason[:4000], "retryable": retryable},
            reason=reason[:4000],
        )


def scan_fail_unclaimed(*, scan: Scan, reason: str, retryable: bool) -> None:
    with transaction.atomic():
        locked = Scan.objects.select_for_update().select_related("subject").get(pk=scan.pk)
        if ScanStatus.FAILED in SCAN_TRANSITIONS[locked.status]:
            _finish(
                locked,
                locked.claim_token,
                ScanStatus.FAILED,
                fields={"status_reason": reason, "retryable": retryable},
                reason=reason,
            )


def scan_retry(*, actor, scan: Scan) -> Scan:
    """Send a retryable failed scan back to the step it failed in."""
    access.require_role(actor, site=scan.subject.site, roles=UPLOAD_ROLES, action="retry scans")
    if scan.status != ScanStatus.FAILED or not scan.retryable:
        raise RuleViolation(
            "not_retryable",
            f"Scan #{scan.pk} is {scan.status}"
            + ("" if scan.status != ScanStatus.FAILED else " and not retryable")
            + ": nothing to retry.",
        )
    back_to = ScanStatus.VALIDATED if scan.system_matrix_id else ScanStatus.RECEIVED
    if scan.reconstructions.exists() and not scan.measurements.exists():
        back_to = ScanStatus.VALIDATED
    with transaction.atomic():
        updated = Scan.objects.filter(pk=scan.pk, status=ScanStatus.FAILED).update(
            status=back_to, status_reason="", retryable=False, claim_token="", updated_at=timezone.now()
        )
        if not updated:
            raise RuleViolation("not_retryable", f"Scan #{scan.pk} changed meanwhile.")
        _audit_scan(
            actor=actor,
            action=AuditAction.SCAN_STATUS_CHANGED,
            scan=scan,
            changes={"status": [ScanStatus.FAILED, back_to]},
            reason="retry",
        )
    scan.refresh_from_db()
    return scan


# The step's queue of each unclaimed status the sweep looks at (imaging.tasks routes them so).
UNCLAIMED_WAITING = (ScanStatus.RECEIVED, ScanStatus.VALIDATED, ScanStatus.RECONSTRUCTED)


def stalled_scans(*, idle_statuses: frozenset[str] | set[str] | None = None) -> list[tuple[int, str]]:
    """(id, status) of the scans whose step lost its task, oldest first:

    - claimed (validating, reconstructing) with a lease that ran out: the worker is gone;
    - received, validated or reconstructed, quiet for ``IMAGING_LOST_MESSAGE_QUIET_SECONDS``
      while the queue of their step holds nothing (``idle_statuses``: the statuses whose
      queue is empty; None: all three). With messages waiting, the scan
      may only be waiting its turn behind them.

    ``tasks.sweep_stalled_work`` queues their step again; claims make a duplicate harmless."""
    quiet = timezone.now() - dt.timedelta(seconds=settings.IMAGING_LOST_MESSAGE_QUIET_SECONDS)
    waiting = [status for status in UNCLAIMED_WAITING if idle_statuses is None or status in idle_statuses]
    return list(
        Scan.objects.filter(
            Q(status__in=waiting, updated_at__lt=quiet)
            | Q(status__in=CLAIMED_STATUSES, claimed_at__lt=scan_leases_expired_before())
        )
        .order_by("pk")
        .values_list("pk", "status")
    )
