"""Health, heartbeats and queue depths on the real Redis broker (issue #17): the broker
ping, kombu's count of a queue's messages, and a prefork worker beating from the event
loop's timer. Private queue names, so no other test's worker or queue is touched."""

from __future__ import annotations

import secrets
import socket
import sys

import pytest
from kombu import Connection

from ops import health, queues
from ops.models import WorkerHeartbeat
from tests.imaging.worker import Worker, wait_for
from tests.services import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker(settings):
    url = redis_url()
    settings.CELERY_BROKER_URL = url
    return url


def test_the_broker_check_pings_redis(broker):
    assert health.check_broker() == health.OK


def test_queue_depths_count_the_messages_waiting(broker, monkeypatch):
    name = f"opsdepth-{secrets.token_hex(4)}"
    monkeypatch.setattr(queues, "declared_queues", lambda: [name])
    with Connection(broker) as conn:
        queue = conn.SimpleQueue(name)
        try:
            for n in range(3):
                queue.put({"n": n})
            depths = queues.queue_depths()
            assert depths.problem == "" and depths.depths == {name: 3}
            assert isinstance(depths.unacknowledged, int) and depths.unacknowledged >= 0
        finally:
            queue.clear()
            queue.close()


def test_a_prefork_worker_beats_from_its_event_loop(broker, settings, tmp_path):
    name = f"opsbeat{secrets.token_hex(3)}"
    queue = f"opsbeat-{secrets.token_hex(4)}"
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "-P", "prefork", "-c", "1"]
    argv += ["-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", "INFO"]
    worker = Worker(name, broker, tmp_path, argv=argv, WORKER_HEARTBEAT_SECONDS=1)
    node = f"{name}@{socket.gethostname()}"
    try:
        first = wait_for(
            lambda: WorkerHeartbeat.objects.filter(node=node).first(), timeout=90, what="the first beat", logs=[worker]
        )
        assert first.queues == [queue]
        wait_for(
            lambda: WorkerHeartbeat.objects.filter(node=node, beat_at__gt=first.beat_at).exists(),
            timeout=30,
            what="a later beat",
            logs=[worker],
        )
        settings.HEALTH_REQUIRED_QUEUES = [queue]
        assert health.check_workers() == health.OK
    finally:
        worker.stop()
    assert not WorkerHeartbeat.objects.filter(node=node).exists()
