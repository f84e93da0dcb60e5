"""Issue #17 on a real Redis (a private redis-server on a free port, without persistence,
stopped and started by the test) and real worker processes running beat (``-B``), with
short leases and sweeps:

- Redis stopped while an upload completes (the API still answers with the scan id) and
  again while the reconstruction runs (its next step cannot be queued when it ends): the
  scan ends ``quantified`` exactly once after Redis returns, with no manual action. The
  reconstruction sleeps longer than its lease meanwhile: its heartbeat keeps the claim.
- Redis stopped while the validation runs (the reconstruction cannot be queued when it
  ends): the same, the reconstruction delivered by the relay once Redis is back.
- Redis stopped while one export builds and another is requested (the API answers 201 at
  once): both are built, each exactly once, after Redis returns, with no manual action.
- A recon worker SIGKILLed with its whole process group mid-reconstruction, the broker's
  visibility timeout an hour: another worker's periodic sweep requeues the scan once the
  lease runs out, and it completes exactly once, within seconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Export
from outbox.models import OutboxMessage
from tests.imaging import tus
from tests.imaging.worker import (
    SLOW_EXPORT_SLEEPING,
    SLOW_VALIDATION_SLEEPING,
    Worker,
    assert_completed_once,
    drop_broker_connections,
    scan_state,
    wait_for,
)
from tests.services import require_executable

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

LEASE = 3
# Redis stays away this long at each step (issue #17 asks for 30 s); MPI_OUTAGE_SECONDS
# shortens it for a quick local run.
OUTAGE_SECONDS = int(os.environ.get("MPI_OUTAGE_SECONDS", "30"))
FAST_SWEEPS = {
    "CELERY_VISIBILITY_TIMEOUT": 3600,  # the broker would hand a dead worker's task on after an hour
    "IMAGING_CLAIM_LEASE_SECONDS": LEASE,
    "IMAGING_SWEEP_INTERVAL_SECONDS": 1,
    "IMAGING_LOST_MESSAGE_QUIET_SECONDS": 3,
    "OUTBOX_RELAY_INTERVAL_SECONDS": 1,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, without persistence: stopping it loses its queues."""

    def __init__(self, executable: str, workdir):
        self.executable, self.workdir = executable, workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), timeout=20, what="redis-server to start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def redis_server(tmp_path, monkeypatch):
    """The private Redis, and this process publishing to it."""
    from config.celery import app

    server = RedisServer(require_executable("redis-server", package="redis-server"), tmp_path)
    server.start()
    monkeypatch.setenv("CELERY_BROKER_URL", server.url)
    saved = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url = server.url
    app.conf.broker_transport_options = {"visibility_timeout": 3600}
    drop_broker_connections(app)
    yield server
    app.conf.broker_url, app.conf.broker_transport_options = saved
    drop_broker_connections(app)
    server.stop()


def beat_worker(name: str, server: RedisServer, tmp_path, **kwargs) -> Worker:
    """A prefork worker on every queue with beat inside (as the embedded runner starts it)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        "ingest,recon,quant,export,live",
        "-P",
        "prefork",
        "-c",
        "1",
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "-B",
        "--schedule",
        str(tmp_path / f"{name}-beat"),
        "-l",
        "INFO",
    ]
    worker = Worker(name, server.url, tmp_path, argv=argv, **FAST_SWEEPS, **kwargs)
    wait_for(lambda: "ready." in worker.log(), timeout=60, what=f"worker {name} to start", logs=[worker])
    return worker


def _claims(scan_id: int, claimed: str = "reconstructing") -> list[list[str]]:
    return [
        e.changes["status"]
        for e in AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED, object_id=str(scan_id)).order_by(
            "sequence"
        )
        if e.changes["status"][1] == claimed
    ]


def _rest_of_outage(stopped_at: float) -> None:
    """Keep Redis away until OUTAGE_SECONDS have passed since it stopped."""
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))


def _pending(task: str, args: list) -> OutboxMessage | None:
    """The outbox row of ``task(*args)`` still waiting for the broker, once a publish has failed."""
    return (
        OutboxMessage.objects.filter(sent_at__isnull=True, task=task, args=args, attempts__gte=1)
        .exclude(last_error="")
        .first()
    )


def test_redis_stopped_at_upload_and_during_reconstruction_the_scan_is_quantified_once(
    api, pipeline, tmp_path, redis_server
):
    worker = beat_worker("steady", redis_server, tmp_path, slow=LEASE * 2)
    try:
        # 1. Redis away while the upload completes: the API answers with the scan id at once.
        redis_server.stop()
        started = time.monotonic()
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
        assert last.status_code == 204 and time.monotonic() - started < 30
        scan_id = int(last["Scan-Id"])
        assert scan_state(scan_id)[0] == "received"
        assert OutboxMessage.objects.filter(sent_at__isnull=True, task="imaging.validate_scan").exists()
        time.sleep(OUTAGE_SECONDS)
        assert scan_state(scan_id)[0] == "received"
        redis_server.start()

        # 2. Redis away while the reconstruction runs: quantification cannot be queued when it ends.
        wait_for(
            lambda: "slow reconstruction: sleeping" in worker.log(),
            timeout=60,
            what="the reconstruction to start",
            logs=[worker],
        )
        redis_server.stop()
        wait_for(lambda: scan_state(scan_id)[0] != "reconstructing", timeout=60, what="the reconstruction to end")
        assert scan_state(scan_id)[0] == "reconstructed"
        time.sleep(OUTAGE_SECONDS)
        assert scan_state(scan_id)[0] == "reconstructed"  # not failed: waiting for the broker
        redis_server.start()

        wait_for(
            lambda: scan_state(scan_id)[0] in ("quantified", "failed"),
            timeout=60,
            what="the scan to be quantified after Redis returned",
            logs=[worker],
        )
        assert_completed_once(scan_id, pipeline, attempt_killed=0)
        # The reconstruction outlived its lease twice over: its heartbeat kept the one claim.
        assert _claims(scan_id) == [["validated", "reconstructing"]]
        assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    finally:
        worker.stop()


def test_a_recon_worker_killed_with_its_process_group_completes_once_within_seconds(
    api, pipeline, tmp_path, redis_server
):
    doomed = beat_worker("doomed", redis_server, tmp_path, slow=120)
    rescuer = None
    try:
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
        scan_id = int(last["Scan-Id"])
        wait_for(lambda: scan_state(scan_id)[0] == "reconstructing", timeout=60, what="the claim", logs=[doomed])
        wait_for(lambda: "slow reconstruction: sleeping" in doomed.log(), timeout=60, what="the sleep")
        rescuer = beat_worker("rescuer", redis_server, tmp_path)  # its start-up sweep: the claim is fresh
        attempt = scan_state(scan_id)[1]
        assert _claims(scan_id) == [["validated", "reconstructing"]]

        killed_at = time.monotonic()
        doomed.kill_group()
        wait_for(
            lambda: scan_state(scan_id)[0] in ("quantified", "failed"),
            timeout=60,
            what="the swept scan to complete",
            logs=[doomed, rescuer],
        )
        assert time.monotonic() - killed_at < 60
        assert_completed_once(scan_id, pipeline, attempt)
        assert _claims(scan_id) == [["validated", "reconstructing"], ["reconstructing", "reconstructing"]]
        assert "requeued stalled scans" in rescuer.log()
    finally:
        doomed.stop()
        if rescuer is not None:
            rescuer.stop()


def test_redis_stopped_while_the_validation_runs_the_scan_is_quantified_once(api, pipeline, tmp_path, redis_server):
    worker = beat_worker("validator", redis_server, tmp_path, slow_validation=LEASE * 2)
    try:
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
        scan_id = int(last["Scan-Id"])
        wait_for(lambda: SLOW_VALIDATION_SLEEPING in worker.log(), timeout=60, what="the validation", logs=[worker])
        assert scan_state(scan_id)[0] == "validating"

        # Redis away while the validation runs: the reconstruction cannot be queued when it ends.
        redis_server.stop()
        stopped_at = time.monotonic()
        wait_for(lambda: scan_state(scan_id)[0] != "validating", timeout=60, what="the validation to end")
        assert scan_state(scan_id)[0] == "validated"
        pending = wait_for(
            lambda: _pending("imaging.reconstruct_scan", [scan_id]),
            timeout=20,
            what="the worker's publish of the reconstruction to fail",
            logs=[worker],
        )
        _rest_of_outage(stopped_at)
        assert scan_state(scan_id)[0] == "validated"  # not failed: waiting for the broker
        redis_server.start()

        wait_for(
            lambda: scan_state(scan_id)[0] in ("quantified", "failed", "rejected"),
            timeout=60,
            what="the scan to be quantified after Redis returned",
            logs=[worker],
        )
        assert_completed_once(scan_id, pipeline, attempt_killed=0)
        # The validation outlived its lease twice over: its heartbeat kept the one claim.
        assert _claims(scan_id, "validating") == [["received", "validating"]]
        assert worker.log().count(SLOW_VALIDATION_SLEEPING) == 1  # validated once, never taken over
        assert _claims(scan_id) == [["validated", "reconstructing"]]
        pending.refresh_from_db()
        assert pending.sent_at is not None  # delivered by the relay, from the row the validation wrote
        assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    finally:
        worker.stop()


def _export_completions(export_id: int) -> list[str]:
    return [
        e.changes["status"]
        for e in AuditEvent.objects.filter(action=AuditAction.EXPORT_COMPLETED, object_id=str(export_id))
    ]


def test_redis_stopped_while_an_export_builds_and_another_is_requested_both_complete_once(
    api, ready, monitor, trial, tmp_path, redis_server, settings
):
    worker = beat_worker("exports", redis_server, tmp_path, slow_export=LEASE * 2, EXPORT_CLAIM_LEASE_SECONDS=LEASE)
    client = api(monitor)
    try:
        response = client.post("/api/v1/exports/", {"kind": "report_csv", "trial": trial.pk}, format="json")
        assert response.status_code == 201, response.content
        running = response.json()["id"]
        wait_for(lambda: SLOW_EXPORT_SLEEPING in worker.log(), timeout=60, what="the first build", logs=[worker])
        assert Export.objects.get(pk=running).status == Export.Status.RUNNING

        # Redis away while it builds; a second export is requested meanwhile.
        redis_server.stop()
        stopped_at = time.monotonic()
        response = client.post("/api/v1/exports/", {"kind": "audit_csv", "trial": trial.pk}, format="json")
        assert response.status_code == 201, response.content  # accepted at once, not a 500
        assert time.monotonic() - stopped_at < 30
        requested = response.json()["id"]
        assert _pending("compliance.run_export", [requested]) is not None
        # The running build needs no broker: it finishes during the outage, its lease renewed throughout.
        wait_for(
            lambda: Export.objects.get(pk=running).status != Export.Status.RUNNING,
            timeout=60,
            what="the first build to end",
            logs=[worker],
        )
        _rest_of_outage(stopped_at)
        assert Export.objects.get(pk=running).status == Export.Status.READY
        assert Export.objects.get(pk=requested).status == Export.Status.QUEUED  # waiting for the broker
        redis_server.start()

        wait_for(
            lambda: Export.objects.get(pk=requested).status in (Export.Status.READY, Export.Status.FAILED),
            timeout=60,
            what="the requested export to be built after Redis returned",
            logs=[worker],
        )
        time.sleep(LEASE)  # a sweep or a second delivery now would show as a second build
        for export_id in (running, requested):
            export = Export.objects.get(pk=export_id)
            assert export.status == Export.Status.READY, export.error
            assert (settings.MEDIA_ROOT / export.file).stat().st_size == export.size_bytes > 0
            assert _export_completions(export_id) == ["ready"]
        assert worker.log().count(SLOW_EXPORT_SLEEPING) == 2  # one build each: no lease ran out, nothing rebuilt
        assert len([p for p in (settings.MEDIA_ROOT / "exports").rglob("*") if p.is_file()]) == 2
        assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    finally:
        worker.stop()
