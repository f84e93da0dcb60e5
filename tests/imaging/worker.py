"""Real Celery worker processes for the integration tests, on the test's own database,
media folder and broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The test database, as DATABASE_URL for a worker process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def purge(broker_url: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    client.delete("ingest", "recon", "quant", "export", "live", "unacked", "unacked_index", "unacked_mutex")


SLOW_STEPS = "tests.imaging.slow_steps"
# Their lines in the worker's log (the plugin SLOW_STEPS).
SLOW_RECONSTRUCTION_SLEEPING = "slow reconstruction: sleeping"
SLOW_VALIDATION_SLEEPING = "slow validation: sleeping"
SLOW_EXPORT_SLEEPING = "slow export: sleeping"


class Worker:
    """``argv``: the worker's command line (default: a solo worker on every queue).
    ``slow``: seconds each reconstruction of this worker sleeps after its claim (the test
    plugin ``tests/imaging/slow_steps.py``), a window to kill it in; ``slow_validation``
    and ``slow_export`` the same for each validation and each export build."""

    def __init__(
        self,
        name: str,
        broker_url: str,
        log_dir: Path,
        argv: list[str] | None = None,
        slow: float | None = None,
        slow_validation: float | None = None,
        slow_export: float | None = None,
        **env,
    ):
        self.name = name
        self.slow = slow
        self.log_path = log_dir / f"{name}.log"
        environment = (
            os.environ
            | {
                "DATABASE_URL": database_url(),
                "MEDIA_ROOT": str(settings.MEDIA_ROOT),
                "MPI_VAR_DIR": str(settings.VAR_DIR),
                "CELERY_BROKER_URL": broker_url,
                "CELERY_VISIBILITY_TIMEOUT": "5",
                "DJANGO_SETTINGS_MODULE": "config.settings",
            }
            | {k: str(v) for k, v in env.items()}
        )
        command = argv or [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            ",".join(settings.TASK_QUEUE_NAMES),
            "-P",
            "solo",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        slow_steps = {
            "SLOW_RECONSTRUCTION_SECONDS": slow,
            "SLOW_VALIDATION_SECONDS": slow_validation,
            "SLOW_EXPORT_SECONDS": slow_export,
        }
        for variable in slow_steps:
            environment.pop(variable, None)  # only what this worker is given
        if any(seconds is not None for seconds in slow_steps.values()):
            command = [*command, "--include", SLOW_STEPS]
            environment |= {variable: str(seconds) for variable, seconds in slow_steps.items() if seconds is not None}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A session of its own: kill_group() ends the worker with its pool and beat, as a lost host would.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def kill_group(self) -> None:
        """SIGKILL the worker's whole process group (main process, pool children, embedded beat)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def wait_for(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition", logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tails = "\n".join(f"--- {w.name}\n{w.log()[-3000:]}" for w in logs)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tails}")


def drop_broker_connections(app) -> None:
    """Connections already made keep their broker URL and transport options: drop them, so
    the next publish uses the configuration as it is now."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    # kombu keeps producer pools per connection in a registry of its own: one for a broker URL
    # used before would hand out the connection pool closed above ("Acquire on closed pool").
    pools.reset()


def scan_state(scan_id: int):
    from imaging.models import Scan

    return Scan.objects.filter(pk=scan_id).values_list("status", "attempt").first()


def kill_mid_reconstruction(worker: Worker, scan_id: int) -> int:
    """Wait for ``worker`` to claim the scan's reconstruction (and, if ``slow``, to sleep in
    it), SIGKILL it; the attempt it held."""
    wait_for(
        lambda: (scan_state(scan_id) or ("",))[0] == "reconstructing",
        timeout=120,
        what="the first worker to claim the reconstruction",
        logs=[worker],
    )
    if worker.slow is not None:
        wait_for(
            lambda: SLOW_RECONSTRUCTION_SLEEPING in worker.log(),
            timeout=60,
            what="the claimed reconstruction to sleep",
            logs=[worker],
        )
    attempt = scan_state(scan_id)[1]
    worker.kill()
    return attempt


def assert_completed_once(scan_id: int, pipeline, attempt_killed: int):
    """The scan finished on a later attempt with one result: one Reconstruction, the
    Measurements of that one only, one RECONSTRUCTION_COMPLETED event. Returns the scan."""
    from audit.actions import AuditAction
    from audit.models import AuditEvent
    from imaging.models import Measurement, Reconstruction, Scan

    scan = Scan.objects.get(pk=scan_id)
    assert scan.status == "quantified", scan.status_reason
    assert scan.attempt > attempt_killed
    assert Reconstruction.objects.filter(scan=scan).count() == 1
    measurements = Measurement.objects.filter(scan=scan)
    assert measurements.count() == len(pipeline.sim["truth"])
    assert measurements.values("reconstruction").distinct().count() == 1
    assert (
        AuditEvent.objects.filter(action=AuditAction.RECONSTRUCTION_COMPLETED, subject_id=pipeline.subject.pk).count()
        == 1
    )
    return scan
