"""Export tasks: "just another interface" to ``services.export_run``."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from compliance import services


@shared_task(
    name="compliance.run_export",
    queue="export",
    acks_late=True,
    soft_time_limit=settings.EXPORT_TASK_SOFT_TIME_LIMIT,
    time_limit=settings.EXPORT_TASK_TIME_LIMIT,
)
def run_export(export_id: int) -> str:
    export = services.export_run(export_id)
    return "claimed elsewhere or done" if export is None else export.status


@shared_task(name="compliance.expire_api_tokens", acks_late=True, soft_time_limit=120, time_limit=150)
def expire_api_tokens() -> str:
    """Celery beat's sweep: end (and audit) API tokens whose time has run out, when it runs out."""
    from compliance.tokens import tokens_expire_due

    return f"{tokens_expire_due()} token(s) ended"
