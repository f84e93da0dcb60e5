"""Celery tasks of the scan pipeline: each takes a scan id and calls one service.

Queues (``CELERY_TASK_ROUTES`` in settings): ``ingest`` (validate), ``recon``
(reconstruct, quantify), ``export`` (PACS delivery here; file exports in compliance.tasks).
Delivery is at least once (acks_late, reject_on_worker_lost, the broker's visibility
timeout): the services claim the scan with a conditional update, so a redelivered
task either resumes its own claim (same task id) or exits quietly. Only transient
errors are retried (database connection trouble, storage I/O), with exponential
backoff; anything else fails the scan with its reason. Queued with
``transaction.on_commit`` by the services.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings
from django.db import OperationalError

from compliance.context import request_context
from imaging import services
from imaging.cache import worker_cache

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
            services.scan_fail(scan_id=scan_id, token=task_id, retryable=True,
                               reason=f"{self.name} was stopped at its hard time limit of {self.time_limit} s")


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
    return min(2 ** retries * 5, 600)


def _run(task, scan_id: int, step) -> None:
    token = task.request.id or f"local-{scan_id}"
    with request_context(request_id=f"task:{token}"):
        try:
            step(scan_id=scan_id, token=token)
        except SoftTimeLimitExceeded:
            services.scan_fail(scan_id=scan_id, token=token, retryable=True,
                               reason=f"{task.name} took longer than {settings.IMAGING_TASK_SOFT_TIME_LIMIT} s")
        except TRANSIENT_ERRORS as exc:
            if task.request.retries >= task.max_retries:
                services.scan_fail(scan_id=scan_id, token=token, retryable=True,
                                   reason=f"{type(exc).__name__} after {task.request.retries} retries: {exc}")
                return
            log.warning("scan %s: transient %s, retrying: %s", scan_id, type(exc).__name__, exc)
            raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc
        except Exception as exc:  # a bad file or a numerical failure: not worth retrying
            log.exception("scan %s: %s failed", scan_id, task.name)
            services.scan_fail(scan_id=scan_id, token=token, retryable=False, reason=f"{type(exc).__name__}: {exc}")


@shared_task(name="imaging.validate_scan", **_TASK_OPTIONS)
def validate_scan(self, scan_id: int) -> None:
    _run(self, scan_id, services.scan_validate)


@shared_task(name="imaging.reconstruct_scan", **_TASK_OPTIONS)
def reconstruct_scan(self, scan_id: int) -> None:
    _run(self, scan_id, lambda **kw: services.scan_reconstruct(cache=worker_cache(), **kw))


@shared_task(name="imaging.quantify_scan", **_TASK_OPTIONS)
def quantify_scan(self, scan_id: int) -> None:
    _run(self, scan_id, services.scan_quantify)


@shared_task(bind=True, name="imaging.send_dicom", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=settings.EXPORT_TASK_SOFT_TIME_LIMIT, time_limit=settings.EXPORT_TASK_TIME_LIMIT,
             max_retries=None)
def send_dicom(self, send_id: int) -> str:
    """Deliver a scan's study to a PACS: "just another interface" to ``pacs.dicom_send_run``.

    One attempt per run; after a transient failure the row is queued again and the task
    retries with backoff. The attempts are counted on the row (so a redelivered task
    counts too) and ``dicom_send_run`` bounds them, hence ``max_retries=None`` here."""
    from imaging import pacs

    send = pacs.dicom_send_run(send_id)
    if send is None:
        return "claimed elsewhere or done"
    countdown = pacs.send_retry_countdown(send)
    if countdown is not None:
        raise self.retry(countdown=countdown, exc=pacs.TransientSendFailure(send.last_error))
    return send.status


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    # The filesystem broker loses a task whose worker was killed: pick such scans and PACS sends up again.
    from imaging import pacs

    for what, sweep in (("scans", services.recover_stalled_scans), ("PACS sends", pacs.recover_stalled_sends)):
        try:
            requeued = sweep()
        except Exception:  # never keep a worker from starting
            log.exception("recovering stalled %s failed", what)
            continue
        if requeued:
            log.info("requeued stalled %s %s", what, requeued)
