"""Worker heartbeats (ops.heartbeat): a ready worker writes its row and keeps it fresh
from its own timer; a clean shutdown removes it; `manage.py health --worker` (the
compose health check of the worker containers) fails on a stale or missing beat."""

from __future__ import annotations

import datetime as dt
import socket
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from ops import heartbeat
from ops.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)


class FakeTimer:
    def __init__(self):
        self.calls = []

    def call_repeatedly(self, seconds, fun, args=(), kwargs=None, priority=0):
        self.calls.append((seconds, fun, args))


def _consumer(node="celery@recon-1", queues=("recon",)):
    task_consumer = SimpleNamespace(queues=[SimpleNamespace(name=q) for q in queues])
    return SimpleNamespace(hostname=node, timer=FakeTimer(), task_consumer=task_consumer)


def test_a_ready_worker_beats_now_and_on_its_timer(settings):
    settings.WORKER_HEARTBEAT_SECONDS = 7
    consumer = _consumer(queues=("recon", "quantify"))
    heartbeat._start_beating(sender=consumer)
    row = WorkerHeartbeat.objects.get()
    assert (row.node, row.queues) == ("celery@recon-1", ["quantify", "recon"])
    assert timezone.now() - row.beat_at < dt.timedelta(seconds=5)
    [(seconds, fun, args)] = consumer.timer.calls
    assert seconds == 7 and fun is heartbeat.beat

    WorkerHeartbeat.objects.update(beat_at=timezone.now() - dt.timedelta(minutes=5))
    fun(*args)  # the timer fires: the same row, beaten again
    row = WorkerHeartbeat.objects.get()
    assert timezone.now() - row.beat_at < dt.timedelta(seconds=5) and row.started_at < row.beat_at


def test_a_clean_shutdown_removes_the_row_and_old_rows_are_pruned():
    long_ago = timezone.now() - dt.timedelta(days=2)
    WorkerHeartbeat.objects.create(node="celery@dead", queues=["ingest"], pid=9, started_at=long_ago, beat_at=long_ago)
    heartbeat.beat("celery@ingest-1", ["ingest"], timezone.now())
    assert list(WorkerHeartbeat.objects.values_list("node", flat=True)) == ["celery@ingest-1"]
    heartbeat._stop_beating(sender=SimpleNamespace(hostname="celery@ingest-1"))
    assert not WorkerHeartbeat.objects.exists()


def test_the_worker_health_command_checks_this_hosts_beat(settings):
    node = f"celery@{socket.gethostname()}"
    with pytest.raises(CommandError, match="no heartbeat"):
        call_command("health", "--worker")
    heartbeat.beat(node, ["recon"], timezone.now())
    call_command("health", "--worker")  # fresh: exit 0
    WorkerHeartbeat.objects.update(
        beat_at=timezone.now() - dt.timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_SECONDS + 5)
    )
    with pytest.raises(CommandError, match=r"last heartbeat \d+ s ago"):
        call_command("health", "--worker", node)


def test_the_readiness_command_names_the_failed_checks(settings):
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
    with pytest.raises(CommandError, match="not ready: workers"):
        call_command("health")
