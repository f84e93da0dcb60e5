"""Worker heartbeats: how a Celery worker says it is alive.

When a worker is ready (``worker_ready``), its main process writes its row
(``WorkerHeartbeat``: node name, the queues it consumes, its pid) and then rewrites it
every ``WORKER_HEARTBEAT_SECONDS`` from the worker's own timer, the one its event loop
runs: a worker whose main loop hangs, or whose host is gone, stops beating. A clean
shutdown removes the row. Each beat uses a connection of its own and closes it, so
a database restart costs one missed beat, never a stuck worker.

Readiness (``ops.health``) wants, for every queue, one worker whose beat is younger
than ``WORKER_HEARTBEAT_STALE_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from ops.models import WorkerHeartbeat

log = logging.getLogger(__name__)

PRUNE_AFTER = dt.timedelta(days=1)  # a dead worker's row stays visible (stale) this long


def beat(node: str, queues: list[str], started_at: dt.datetime) -> None:
    """Write ``node``'s heartbeat now; prune rows of workers silent for a day."""
    now = timezone.now()
    try:
        WorkerHeartbeat.objects.update_or_create(
            node=node,
            defaults=dict(queues=sorted(queues), pid=os.getpid(), started_at=started_at, beat_at=now),
        )
        WorkerHeartbeat.objects.filter(beat_at__lt=now - PRUNE_AFTER).delete()
    except DatabaseError:
        log.warning("worker heartbeat of %s not written: the database is unreachable", node, exc_info=True)
    finally:
        connection.close()


def forget(node: str) -> None:
    try:
        WorkerHeartbeat.objects.filter(node=node).delete()
    except DatabaseError:
        log.warning("worker heartbeat of %s not removed: the database is unreachable", node, exc_info=True)
    finally:
        connection.close()


def _consumed_queues(consumer) -> list[str]:
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        return [queue.name for queue in task_consumer.queues]
    return list(consumer.app.amqp.queues.consume_from or consumer.app.amqp.queues)


@worker_ready.connect
def _start_beating(sender=None, **kwargs) -> None:
    node, queues, started_at = sender.hostname, _consumed_queues(sender), timezone.now()
    beat(node, queues, started_at)
    sender.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, beat, (node, queues, started_at))


@worker_shutdown.connect
def _stop_beating(sender=None, **kwargs) -> None:
    node = getattr(sender, "hostname", None)
    if node:
        forget(node)
