"""Export tasks: "just another interface" to ``services.exports.export_run``.

The services queue no task: the interface that requests or retries an export queues its
build with ``queue_export`` (as ``imaging.tasks.queue_next_step`` does for scans)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from compliance.models import Export
from compliance.services.exports import export_run
from outbox.relay import enqueue


@shared_task(
    name="compliance.run_export",
    acks_late=True,
    soft_time_limit=settings.EXPORT_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.EXPORT_TASK_TIME_LIMIT,
)
def run_export(export_id: int) -> str:
    export = export_run(export_id)
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
