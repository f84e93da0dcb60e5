"""Health checks: liveness and readiness, for the load balancer and compose.

``liveness()`` asks nothing of anyone: the process answers. ``readiness()`` asks each
dependency, each within ``HEALTH_CHECK_TIMEOUT_SECONDS``: the database (a query), the
broker (a ping), storage (a file written and removed under ``MEDIA_ROOT``) and the
workers (for every queue, a worker whose heartbeat is fresh, ``ops.heartbeat``).

What they answer is polled by machines, unauthenticated: check names, "ok" or a short
problem naming the kind of failure, queue names. Never a host, a URL, an exception's
text (a broker URL carries its password) or anything of a person.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from ops.models import WorkerHeartbeat

OK = "ok"


def liveness() -> tuple[bool, dict]:
    return True, {"status": "ok"}


def check_database() -> str:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL statement_timeout = %s", [int(settings.HEALTH_CHECK_TIMEOUT_SECONDS * 1000)])
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"unreachable ({type(exc).__name__})"
    return OK


def check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
            try:
                client.ping()
            finally:
                client.close()
        elif url.startswith("filesystem://"):
            folder = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in") or "")
            if not (folder and os.path.isdir(folder) and os.access(folder, os.W_OK)):
                return "queue folder missing or not writable"
        else:
            from kombu import Connection

            with Connection(url, connect_timeout=timeout) as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure of the client is the answer: the broker is not usable
        return f"unreachable ({type(exc).__name__})"
    return OK


def check_storage() -> str:
    root = Path(settings.MEDIA_ROOT)
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".health-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"MEDIA_ROOT not writable ({type(exc).__name__})"
    return OK


def declared_queues() -> list[str]:
    """Every queue the Celery app declares (``config.celery``)."""
    return sorted(current_app.amqp.queues)


def required_queues() -> list[str]:
    """The queues a worker must serve: ``HEALTH_REQUIRED_QUEUES``, else every declared queue."""
    return sorted(settings.HEALTH_REQUIRED_QUEUES) or declared_queues()


def fresh_since() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_SECONDS)


def check_workers() -> str:
    try:
        served: set[str] = set()
        for queues in WorkerHeartbeat.objects.filter(beat_at__gte=fresh_since()).values_list("queues", flat=True):
            served.update(queues)
    except DatabaseError as exc:
        return f"heartbeats unreadable ({type(exc).__name__})"
    missing = [q for q in required_queues() if q not in served]
    if missing:
        return f"no worker with a fresh heartbeat for queue(s): {', '.join(missing)}"
    return OK


READINESS_CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "workers": check_workers,
}


def readiness() -> tuple[bool, dict]:
    """(ready, body): every check's answer, and the names of those that failed."""
    checks = {name: check() for name, check in READINESS_CHECKS.items()}
    failed = [name for name, answer in checks.items() if answer != OK]
    return not failed, {"status": "fail" if failed else "ok", "failed": failed, "checks": checks}


def worker_alive(node: str) -> tuple[bool, str]:
    """For a worker container's own health check: has ``node`` beaten recently?"""
    row = WorkerHeartbeat.objects.filter(node=node).values_list("beat_at", flat=True).first()
    if row is None:
        return False, f"{node}: no heartbeat"
    age = (timezone.now() - row).total_seconds()
    if row < fresh_since():
        return False, f"{node}: last heartbeat {age:.0f} s ago"
    return True, f"{node}: last heartbeat {age:.0f} s ago"
