"""Queue a task through the database, deliver it to the broker after the commit.

``enqueue`` writes an ``OutboxMessage`` in the caller's transaction (at once outside one) and,
once that transaction commits, hands the row to ``relay``. ``relay`` sends due rows with
the task's own ``apply_async`` (so routes, eager mode and the tests' patches apply), marks
each sent, and on any error keeps the row for a later attempt with backoff: a broker outage
is transient everywhere. The periodic ``outbox.relay`` task (Celery beat) and each worker's
start-up deliver what the after-commit attempt could not.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Sequence

import kombu.exceptions
import redis.exceptions
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from outbox.models import OutboxMessage

log = logging.getLogger(__name__)

# What a broker outage raises on publish: kombu wraps the transport's connection errors in
# its OperationalError; a raw redis or socket error can reach us too.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

# A relay that takes a row pushes its due time this far ahead first: another relay leaves
# it alone meanwhile, and a relay that died mid-send leaves it due again after this.
RELAY_LEASE_SECONDS = 60


def message_key(task: str, args: Sequence) -> str:
    return f"{task}:{json.dumps(list(args), separators=(',', ':'), default=str)}"[:255]


def backoff_seconds(attempts: int) -> int:
    """Wait before the next attempt after ``attempts`` failed ones: 2, 4, 8 ... 60 s."""
    return min(2 ** max(1, attempts), 60)


def enqueue(task: str, args: Sequence = (), *, queue: str = "", unless_since: dt.datetime | None = None):
    """Record ``task(*args)`` for delivery once the current transaction commits.

    ``queue``: empty lets ``CELERY_TASK_ROUTES`` decide. ``unless_since`` (the sweeps): write
    nothing when the same task and arguments are still pending or were queued since then.
    Returns the message, or None when one was already on its way."""
    key = message_key(task, args)
    if (
        unless_since is not None
        and OutboxMessage.objects.filter(Q(sent_at__isnull=True) | Q(created_at__gte=unless_since), key=key).exists()
    ):
        return None
    message = OutboxMessage.objects.create(task=task, args=list(args), queue=queue, key=key)
    message_id = message.pk
    transaction.on_commit(lambda: relay_quietly([message_id]))
    return message


def relay_quietly(ids: Iterable[int] | None = None) -> int:
    """``relay`` for an after-commit hook: whatever goes wrong, the work is committed and
    the periodic relay tries again, so nothing is raised into the request or task."""
    try:
        return relay(ids=ids)
    except Exception:
        log.exception("outbox: relaying after commit failed; the periodic relay will retry")
        return 0


def _send(message: OutboxMessage) -> None:
    options = {"queue": message.queue} if message.queue else {}
    current_app.tasks[message.task].apply_async(args=list(message.args), **options)


def relay(*, ids: Iterable[int] | None = None, limit: int = 500) -> int:
    """Send the due pending messages (only ``ids`` when given), oldest first; the count sent.

    After a broker error the rest of the batch waits for the next relay (the broker is
    away: one failed connection is enough to know)."""
    now = timezone.now()
    due = OutboxMessage.objects.filter(sent_at__isnull=True, due_at__lte=now)
    if ids is not None:
        due = due.filter(pk__in=list(ids))
    sent = 0
    for message in list(due.order_by("pk")[:limit]):
        taken = OutboxMessage.objects.filter(pk=message.pk, sent_at__isnull=True, due_at__lte=now).update(
            due_at=now + dt.timedelta(seconds=RELAY_LEASE_SECONDS), attempts=F("attempts") + 1
        )
        if not taken:  # another relay has it
            continue
        try:
            _send(message)
        except Exception as exc:
            attempts = message.attempts + 1
            wait = backoff_seconds(attempts)
            OutboxMessage.objects.filter(pk=message.pk).update(
                due_at=timezone.now() + dt.timedelta(seconds=wait), last_error=f"{type(exc).__name__}: {exc}"[:2000]
            )
            if isinstance(exc, BROKER_ERRORS):
                log.warning(
                    "outbox: broker unavailable, %s kept (attempt %s, next in %s s): %s",
                    message.key,
                    attempts,
                    wait,
                    exc,
                )
                break
            log.exception("outbox: sending %s failed (attempt %s, next in %s s)", message.key, attempts, wait)
            continue
        OutboxMessage.objects.filter(pk=message.pk).update(sent_at=timezone.now(), last_error="")
        sent += 1
    return sent


def pending_count() -> int:
    return OutboxMessage.objects.filter(sent_at__isnull=True).count()


def prune() -> int:
    """Forget messages sent longer ago than ``OUTBOX_KEEP_SENT_SECONDS``; the count deleted."""
    before = timezone.now() - dt.timedelta(seconds=settings.OUTBOX_KEEP_SENT_SECONDS)
    deleted, _ = OutboxMessage.objects.filter(sent_at__lt=before).delete()
    return deleted
