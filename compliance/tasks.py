"""Export tasks: "just another interface" to ``services.exports.export_run``.

The services queue no task: the interface that requests or retries an export queues its
build with ``queue_export`` (as ``imaging.tasks.queue_next_step`` does for scans)."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.utils import timezone

from compliance.models import Export
from compliance.services.exports import export_renew_claim, export_run, stalled_exports
from ops.leases import renewing
from ops.queues import messages_waiting
from outbox.relay import enqueue

log = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="compliance.run_export",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.EXPORT_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.EXPORT_TASK_TIME_LIMIT,
)
def run_export(self, export_id: int) -> str:
    """Build one export under a claim whose lease a heartbeat renews (``ops.leases``): a
    killed worker stops renewing, and ``sweep_stalled_exports`` queues the build again."""
    token = self.request.id or ""
    with renewing(
        lambda: export_renew_claim(export_id=export_id, token=token),
        interval=settings.EXPORT_CLAIM_LEASE_SECONDS / 4,
        name=f"export-{export_id}-lease",
    ):
        export = export_run(export_id, token=token)
    return "claimed elsewhere or done" if export is None else export.status


def queue_export(export: Export) -> None:
    """Record, in the current transaction, the build of a requested or retried export: the
    outbox hands it to the ``export`` queue after the commit, or later while the broker is away."""
    enqueue(run_export.name, [export.pk], queue="export")


@shared_task(name="compliance.expire_api_tokens", acks_late=True, soft_time_limit=120, time_limit=150)
def expire_api_tokens() -> str:
    """Celery beat's sweep: end (and audit) API tokens whose time has run out, when it runs out."""
    from compliance.tokens import tokens_expire_due

    return f"{tokens_expire_due()} token(s) ended"


def recover_stalled_exports(*, queue_idle: bool) -> list[int]:
    """Queue again the build of each export that lost its task (``stalled_exports``); one
    queued again recently, or still pending in the outbox, is not queued twice."""
    since = timezone.now() - dt.timedelta(seconds=settings.EXPORT_CLAIM_LEASE_SECONDS)
    return [
        export_id
        for export_id in stalled_exports(queue_idle=queue_idle)
        if enqueue(run_export.name, [export_id], queue="export", unless_since=since) is not None
    ]


@shared_task(name="compliance.sweep_stalled_exports", ignore_result=True, soft_time_limit=120, time_limit=150)
def sweep_stalled_exports() -> None:
    """Celery beat's sweep (``IMAGING_SWEEP_INTERVAL_SECONDS``): builds whose lease ran out,
    and queued exports whose message was lost while the ``export`` queue stands empty."""
    _sweep(start=False)


def _sweep(*, start: bool) -> None:
    try:
        depths = messages_waiting(["export"])
        requeued = recover_stalled_exports(queue_idle=start or (depths is not None and depths["export"] == 0))
    except Exception:
        log.exception("recovering stalled exports failed")
        return
    if requeued:
        log.info("requeued stalled exports %s", requeued)


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    # The filesystem broker loses a task whose worker was killed: pick such exports up again.
    _sweep(start=True)
