"""Worker heartbeats: each Celery worker's main process writes its row every
``WORKER_HEARTBEAT_SECONDS``; readiness and the operations page read them."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """The last sign of life of one Celery worker (its node name, ``celery@host``).

    Operational state, not trial data: no audit event (it is written every few seconds),
    and nothing identifiable. A worker stopped cleanly removes its row; a killed one
    leaves it, going stale, until it is pruned a day later."""

    node = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)  # the queue names the worker consumes
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["node"]

    def __str__(self) -> str:
        return f"{self.node} (last beat {self.beat_at:%Y-%m-%d %H:%M:%S} UTC)"
