"""What the operations page shows platform administrators: queue depths, stalled work,
worker heartbeats and the audit checkpoint state. Machine state only: scan and send
ids with their status and times, never a subject or a person."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit import chain
from compliance.services.exports import stalled_exports
from imaging import pacs
from imaging.models import Scan
from imaging.services.scan_claims import stalled_scans
from ops import health
from ops.models import WorkerHeartbeat
from ops.queues import queue_depths


@dataclass(frozen=True)
class CheckpointState:
    head_sequence: int | None
    last_sequence: int | None
    last_written_at: dt.datetime | None
    events_since: int
    overdue: bool  # no checkpoint for twice the beat interval while events were recorded
    problems: list[str]


def checkpoint_state() -> CheckpointState:
    checkpoints, problems = chain.read_checkpoints()
    head_sequence, _ = chain.head()
    last = checkpoints[-1] if checkpoints else None
    written = parse_datetime(last.written_at) if last else None
    since = (head_sequence or 0) - (last.sequence if last else 0)
    limit = dt.timedelta(seconds=2 * settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS)
    overdue = since > 0 and (written is None or timezone.now() - written > limit)
    return CheckpointState(head_sequence, last.sequence if last else None, written, since, overdue, problems)


def worker_rows() -> list[dict]:
    fresh = health.fresh_since()
    now = timezone.now()
    return [
        {
            "node": w.node,
            "queues": w.queues,
            "pid": w.pid,
            "started_at": w.started_at,
            "beat_at": w.beat_at,
            "age_seconds": (now - w.beat_at).total_seconds(),
            "fresh": w.beat_at >= fresh,
        }
        for w in WorkerHeartbeat.objects.order_by("node")
    ]


def overview() -> dict:
    stalled = dict(stalled_scans())
    scans = (
        Scan.objects.filter(pk__in=list(stalled))
        .order_by("pk")
        .only("pk", "status", "attempt", "claimed_at", "updated_at", "retryable")
    )
    ready, readiness = health.readiness()
    queues = queue_depths()
    return {
        "ready": ready,
        "readiness": readiness,
        "queues": queues,
        "stalled_scans": list(scans),
        "stalled_sends": pacs.stalled_sends(),
        "stalled_exports": stalled_exports(queue_idle=queues.depths.get("export") == 0),
        "workers": worker_rows(),
        "required_queues": health.required_queues(),
        "heartbeat_stale_seconds": settings.WORKER_HEARTBEAT_STALE_SECONDS,
        "checkpoint": checkpoint_state(),
        "checkpoint_interval_seconds": settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS,
    }
