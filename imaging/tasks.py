"""Celery tasks of the scan pipeline: each takes a scan id and calls one service.

The chain lives here, not in the services: validate -> reconstruct -> quantify. A step
whose service moved the scan on (``validated``, ``reconstructed``) records the next task in
the same transaction (the service calls the ``then`` it is given: ``queue_next_step``); a
step that lost its claim, was refused or failed queues nothing. What starts or restarts the
chain (an upload completed, a retry, the sweep) calls ``queue_next_step`` too: the task for
the scan's status, from the one table ``NEXT_STEP``.

Queueing goes through the transactional outbox (``outbox.relay.enqueue``): a row written
with the change that made the step due, sent to the broker after the commit and by the
periodic relay until the broker takes it. A broker outage delays a step; it never fails a
scan nor an HTTP request.

Queues (``CELERY_TASK_ROUTES`` in settings): ``ingest`` (validate, the sweeps), ``recon``
(reconstruct), ``quant`` (quantify), ``export`` (PACS delivery here; file exports in
compliance.tasks). Delivery is at least once: the services claim the scan with a
conditional update, so a redelivered task either resumes its own claim (same task id) or
exits quietly. A running claimed step renews its lease (a heartbeat thread); the periodic
sweep (``sweep_stalled_work``, Celery beat) queues again the step of a claim whose lease
ran out and of unclaimed work whose message was lost. Only transient errors are retried
(database connection trouble, storage I/O, the broker), with exponential backoff; anything
else fails the scan with its reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from audit.context import request_context
from imaging import pacs
from imaging.cache import worker_cache
from imaging.models import DicomSend, Scan, ScanStatus
from imaging.services.scan_claims import scan_fail, scan_renew_claim, stalled_scans
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate
from ops.leases import renewing
from ops.queues import messages_waiting
from outbox.relay import BROKER_ERRORS, enqueue, relay_quietly

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, *BROKER_ERRORS)


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


def _heartbeat(scan_id: int, token: str):
    """While the step runs, renew its claim's lease every quarter of it (``ops.leases``): a
    killed worker stops renewing, and the sweep finds its scan once the lease runs out."""
    return renewing(
        lambda: scan_renew_claim(scan_id=scan_id, token=token),
        interval=settings.IMAGING_CLAIM_LEASE_SECONDS / 4,
        name=f"scan-{scan_id}-lease",
    )


def _run(task, scan_id: int, step, *, claims: bool = True) -> Scan | None:
    """The step's scan as the service left it; None when it claimed nothing or failed.
    ``claims``: the step holds a claim while it runs, renewed by the heartbeat."""
    token = task.request.id or f"local-{scan_id}"
    lease = _heartbeat(scan_id, token) if claims else contextlib.nullcontext()
    with request_context(request_id=f"task:{token}"), lease:
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
            # Should the broker refuse the retry too, Celery rejects the message: the claim's
            # lease runs out (or the unclaimed scan stays quiet) and the sweep queues it again.
            raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
        except Exception as exc:  # a bad file or a numerical failure: not worth retrying
            log.exception("scan %s: %s failed", scan_id, task.name)
            scan_fail(scan_id=scan_id, token=token, retryable=False, reason=f"{type(exc).__name__}: {exc}")
    return None


@shared_task(name="imaging.validate_scan", **_TASK_OPTIONS)
def validate_scan(self, scan_id: int) -> None:
    _run(self, scan_id, lambda **kw: scan_validate(then=queue_next_step, **kw))


@shared_task(name="imaging.reconstruct_scan", **_TASK_OPTIONS)
def reconstruct_scan(self, scan_id: int) -> None:
    _run(self, scan_id, lambda **kw: scan_reconstruct(cache=worker_cache(), then=queue_next_step, **kw))


@shared_task(name="imaging.quantify_scan", **_TASK_OPTIONS)
def quantify_scan(self, scan_id: int) -> None:
    _run(self, scan_id, scan_quantify, claims=False)


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
    """Record, in the current transaction (at once outside one), the task that takes ``scan``
    on from its status; it reaches the broker after the commit or, while the broker is
    away, through the periodic relay. After an upload completes, a retry, a step done."""
    task = NEXT_STEP.get(scan.status)
    if task is not None:
        enqueue(task.name, [scan.pk])


# Which status waits on which queue: an unclaimed scan is only swept while its queue is empty.
_WAITS_ON = {ScanStatus.RECEIVED: "ingest", ScanStatus.VALIDATED: "recon", ScanStatus.RECONSTRUCTED: "quant"}


def _queued_since(seconds: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=seconds)


def recover_stalled_scans(*, depths: dict[str, int] | None) -> list[int]:
    """Queue again the step of each scan that lost its task (``services.stalled_scans``).

    Unclaimed scans count only when their step's queue is empty in ``depths`` (the broker's
    ``messages_waiting``; None: the broker cannot say, so claims whose lease ran out only). A
    step queued again recently (or still pending in the outbox) is not queued twice."""
    idle = {str(status) for status, queue in _WAITS_ON.items() if (depths or {}).get(queue) == 0}
    requeued = []
    for scan_id, status in stalled_scans(idle_statuses=idle):
        claimed = status not in _WAITS_ON
        since = _queued_since(
            settings.IMAGING_CLAIM_LEASE_SECONDS if claimed else settings.IMAGING_LOST_MESSAGE_QUIET_SECONDS
        )
        if enqueue(NEXT_STEP[status].name, [scan_id], unless_since=since) is not None:
            requeued.append(scan_id)
    return requeued


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


def queue_send(send: DicomSend) -> None:
    """Record the delivery ``pacs.dicom_send_request`` wrote, for the broker after the commit."""
    enqueue(send_dicom.name, [send.pk], queue="export")


def recover_stalled_sends() -> list[int]:
    """Queue again each PACS send that lost its task (``pacs.stalled_sends``)."""
    since = _queued_since(settings.IMAGING_LOST_MESSAGE_QUIET_SECONDS)
    return [
        send_id
        for send_id in pacs.stalled_sends()
        if enqueue(send_dicom.name, [send_id], queue="export", unless_since=since) is not None
    ]


def _sweep(what: str, sweep) -> None:
    try:
        requeued = sweep()
    except Exception:
        log.exception("recovering stalled %s failed", what)
        return
    if requeued:
        log.info("requeued stalled %s %s", what, requeued)


@shared_task(name="imaging.sweep_stalled_work", ignore_result=True, soft_time_limit=120, time_limit=150)
def sweep_stalled_work() -> None:
    """Celery beat's sweep (``IMAGING_SWEEP_INTERVAL_SECONDS``): claims whose lease ran out,
    unclaimed scans and PACS sends whose message was lost while their queue stands empty."""
    _sweep_all(start=False)


def _sweep_all(*, start: bool) -> None:
    depths = messages_waiting(["ingest", "recon", "quant", "export"])
    _sweep("scans", lambda: recover_stalled_scans(depths=depths))
    # A send queued long ago may be waiting behind others: only with its queue empty, or at
    # a worker's start-up (as before the periodic sweep), is its message taken for lost.
    if start or (depths is not None and depths["export"] == 0):
        _sweep("PACS sends", recover_stalled_sends)


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    # The filesystem broker loses a task whose worker was killed: pick such scans and PACS
    # sends up again, and deliver what the outbox holds.
    _sweep_all(start=True)
    relay_quietly()
