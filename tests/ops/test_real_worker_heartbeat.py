"""A real Celery worker beats (issue #17): its row appears when it is ready, its beat
moves on from the worker's own timer, readiness passes while it lives, and a clean stop
removes the row. Embedded broker (filesystem) and the test database."""

from __future__ import annotations

import socket

import pytest
from django.test import Client

from ops.models import WorkerHeartbeat
from tests.imaging.worker import Worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_running_worker_keeps_its_heartbeat_fresh(settings, tmp_path):
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
    worker = Worker("beating", "filesystem://", tmp_path, WORKER_HEARTBEAT_SECONDS=1)
    node = f"beating@{socket.gethostname()}"
    try:
        first = wait_for(
            lambda: WorkerHeartbeat.objects.filter(node=node).first(), timeout=90, what="the first beat", logs=[worker]
        )
        assert sorted(first.queues) == sorted(settings.TASK_QUEUE_NAMES) and first.pid > 0
        wait_for(
            lambda: WorkerHeartbeat.objects.filter(node=node, beat_at__gt=first.beat_at).exists(),
            timeout=30,
            what="a later beat",
            logs=[worker],
        )
        settings.HEALTH_REQUIRED_QUEUES = ["ingest", "recon", "export"]
        response = Client().get("/health/ready/")
        assert response.status_code == 200, response.content
    finally:
        worker.stop()
    assert not WorkerHeartbeat.objects.filter(node=node).exists()
