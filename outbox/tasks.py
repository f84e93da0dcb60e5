"""The periodic relay (Celery beat, ``settings.CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from celery import shared_task

from outbox.relay import prune, relay


@shared_task(name="outbox.relay", ignore_result=True, soft_time_limit=120, time_limit=150)
def relay_due() -> str:
    """Deliver what the after-commit attempts could not (the broker was away), forget old sent rows."""
    sent = relay()
    pruned = prune()
    return f"{sent} sent, {pruned} pruned"
