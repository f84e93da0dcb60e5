"""Celery tasks of the scan pipeline: each takes a scan id and calls one service.

The chain lives here, not in the services: validate -> reconstruct -> quantify. A step
whose service moved the scan on (``validated``, ``reconstructed``) queues the next task
on commit; a step that lost its claim, was refused or failed queues nothing. What starts
or restarts the chain (an upload completed, a retry, the start-up sweep) calls
``queue_next_step``: the task for the scan's status, from the one table ``NEXT_STEP``.

Queues (``CELERY_TASK_ROUTES`` in settings): ``ingest`` (validate), ``recon``
(reconstruct, quantify), ``export`` (PACS delivery here; file exports in compliance.tasks).
Delivery is at least once (acks_late, reject_on_worker_lost, the broker's visibility
timeout): the services claim the scan with a conditional update, so a redelivered
task either resumes its own claim (same task id) or exits quietly. Only transient
errors are retried (database connection trouble, storage I/O), with exponential
backoff; anything else fails the scan with its reason. Queued with
``transaction.on_commit``, after the write that made the step due.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings
from django.db import OperationalError, transaction

from audit.context import request_context
from imaging import pacs
from imaging.cache import worker_cache
from imaging.models import DicomSend, Scan, ScanStatus
from imaging.services.scan_claims import scan_fail, stalled_scans
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, OSError)


class ScanTask(Task):
    """A scan step. Past its hard time limit the pool kills the process running it, so no
    code of the step runs again: the worker's main process calls ``on_failure`` with
    TimeLimitExceeded, and the scan fails with the reason instead of staying claimed."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if not isinstance(exc, TimeLimitExceeded):
            return
        scan_id = args[0] if args else kwargs.get("scan_id")
        with request_context(request_id=f"task:{task_id}"):
            scan_fail(
                scan_id=scan_id,
                token=task_id,
                retryable=True,
                reason=f"{self.name} was stopped at its hard time limit of {self.time_limit} s",
            )


_TASK_OPTIONS = dict(
    base=ScanTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.IMAGING_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.IMAGING_TASK_TIME_LIMIT,
    max_retries=settings.IMAGING_TASK_MAX_RETRIES,
)


def _backoff(retries: int) -> int:
    return min(2**retries * 5, 600)


def _run(task, scan_id: int, step) -> Scan | None:
    """The step's scan as the service left it; None when it claimed nothing or failed."""
    token = task.request.id or f"local-{scan_id}"
    with request_context(request_id=f"task:{token}"):
        try:
            return step(scan_id=scan_id, token=token)
        except SoftTimeLimitExceeded:
            scan_fail(
                scan_id=scan_id,
                token=token,
                retryable=True,
                reason=f"{task.name} took longer than {settings.IMAGING_TASK_SOFT_TIME_LIMIT} s",
            )
        except TRANSIENT_ERRORS as exc:
            if task.request.retries >= task.max_retries:
                scan_fail(
                    scan_id=scan_id,
                    token=token,
                    retryable=True,
                    reason=f"{type(exc).__name__} after {task.request.retries} retries: {exc}",
                )
                return None
            log.warning("scan %s: transient %s, retrying: %s", scan_id, type(exc).__name__, exc)
            raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
        except Exception as exc:  # a bad file or a numerical failure: not worth retrying
            log.exception("scan %s: %s failed", scan_id, task.name)
            scan_fail(scan_id=scan_id, token=token, retryable=False, reason=f"{type(exc).__name__}: {exc}")
    return None


def _then(scan: Scan | None, done: str) -> None:
    """Queue the next step when this one ended in ``done`` (its own success)."""
    if scan is not None and scan.status == done:
        queue_next_step(scan)


@shared_task(name="imaging.validate_scan", **_TASK_OPTIONS)
def validate_scan(self, scan_id: int) -> None:
    _then(_run(self, scan_id, scan_validate), ScanStatus.VALIDATED)


@shared_task(name="imaging.reconstruct_scan", **_TASK_OPTIONS)
def reconstruct_scan(self, scan_id: int) -> None:
    scan = _run(self, scan_id, lambda **kw: scan_reconstruct(cache=worker_cache(), **kw))
    _then(scan, ScanStatus.RECONSTRUCTED)


@shared_task(name="imaging.quantify_scan", **_TASK_OPTIONS)
def quantify_scan(self, scan_id: int) -> None:
    _run(self, scan_id, scan_quantify)


# The task that takes a scan on from each status; none from a final one. A claimed status
# (validating, reconstructing) maps to its own step: the sweep requeues a lost claim.
NEXT_STEP: dict[str, Any] = {
    ScanStatus.RECEIVED: validate_scan,
    ScanStatus.VALIDATING: validate_scan,
    ScanStatus.VALIDATED: reconstruct_scan,
    ScanStatus.RECONSTRUCTING: reconstruct_scan,
    ScanStatus.RECONSTRUCTED: quantify_scan,
}


def queue_next_step(scan: Scan) -> None:
    """Once the current transaction commits (at once outside one), queue the task that
    takes ``scan`` on from its status: after an upload completes, a retry, a step done."""
    task, scan_id = NEXT_STEP.get(scan.status), scan.pk
    if task is not None:
        transaction.on_commit(lambda: task.delay(scan_id))


def recover_stalled_scans() -> list[int]:
    """Queue again the step of each scan that lost its task (``services.stalled_scans``)."""
    stalled = stalled_scans()
    for scan_id, status in stalled:
        NEXT_STEP[status].delay(scan_id)
    return [scan_id for scan_id, _ in stalled]


@shared_task(
    bind=True,
    name="imaging.send_dicom",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.EXPORT_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.EXPORT_TASK_TIME_LIMIT,
    max_retries=None,
)
def send_dicom(self, send_id: int) -> str:
    """Deliver a scan's study to a PACS: "just another interface" to ``pacs.dicom_send_run``.

    One attempt per run; after a transient failure the row is queued again and the task
    retries with backoff. The attempts are counted on the row (so a redelivered task
    counts too) and ``dicom_send_run`` bounds them, hence ``max_retries=None`` here."""
    send = pacs.dicom_send_run(send_id)
    if send is None:
        return "claimed elsewhere or done"
    countdown = pacs.send_retry_countdown(send)
    if countdown is not None:
        raise self.retry(countdown=countdown, exc=pacs.TransientSendFailure(send.last_error))
    return send.status


def _send_now(send_id: int) -> None:
    send_dicom.apply_async(args=[send_id], queue="export")


def queue_send(send: DicomSend) -> None:
    """Once the current transaction commits, queue the delivery ``pacs.dicom_send_request`` wrote."""
    send_id = send.pk
    transaction.on_commit(lambda: _send_now(send_id))


def recover_stalled_sends() -> list[int]:
    """Queue again each PACS send that lost its task (``pacs.stalled_sends``)."""
    stalled = pacs.stalled_sends()
    for send_id in stalled:
        _send_now(send_id)
    return stalled


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    # The filesystem broker loses a task whose worker was killed: pick such scans and PACS sends up again.
    for what, sweep in (("scans", recover_stalled_scans), ("PACS sends", recover_stalled_sends)):
        try:
            requeued = sweep()
        except Exception:  # never keep a worker from starting
            log.exception("recovering stalled %s failed", what)
            continue
        if requeued:
            log.info("requeued stalled %s %s", what, requeued)
