"""Run the whole platform on one machine: database migrated, demo loaded on first start,
a Celery worker process beside the web server. The embedded default needs no other
server process: SQLite, kombu's filesystem broker and local storage under var/."""

from __future__ import annotations

import atexit
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


def _die_with_parent() -> None:
    """In the worker, before exec: ask Linux to send SIGTERM when the server process dies,
    however it dies (Ctrl-C, SIGTERM, SIGKILL), so no worker is left behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_command(hostname: str = "embedded@%h") -> list[str]:
    """The embedded worker's command line: every queue, and Celery beat inside it (``-B``)
    for the periodic sweeps (outbox relay, stalled and expired work, audit checkpoints).

    prefork, one child: the solo and threads pools ignore ``time_limit`` and
    ``soft_time_limit``, so one stuck task would hold the only worker for ever. Under
    prefork the parent kills a child past its hard limit and starts another one."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--queues",
        ",".join(settings.TASK_QUEUE_NAMES),
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "--loglevel",
        "INFO",
        "--hostname",
        hostname,
        "--beat",
        "--schedule",
        str(settings.VAR_DIR / "celerybeat-schedule"),
    ]


class Command(BaseCommand):
    help = "Migrate, load the demo trial on first start, start a Celery worker and serve the platform."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000", help="address:port to serve on")
        parser.add_argument("--no-worker", action="store_true", help="do not start a Celery worker beside the server")
        parser.add_argument("--no-demo", action="store_true", help="do not load the demo trial")

    def handle(self, *args, addrport, no_worker, no_demo, **options):
        if settings.PRODUCTION:
            raise CommandError(
                "runplatform is the embedded runner; in production run gunicorn and celery (see docker-compose.yml)"
            )
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("database ready")
        # The worker starts first, so the demo scans queued below are processed at once.
        worker = None if no_worker else self._start_worker()
        if worker is not None:
            atexit.register(self._stop, worker)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        if not no_demo:
            call_command("load_demo", stdout=self.stdout)
            call_command("load_demo_scans", stdout=self.stdout)
            call_command("load_demo_live", stdout=self.stdout)

        self.stdout.write(self.style.SUCCESS(f"MPI trial platform running at http://{addrport}/"))
        self.stdout.write(f"API: http://{addrport}/api/v1/   API docs: http://{addrport}/api/docs/")
        # Static files come from WhiteNoise (settings.WHITENOISE_USE_FINDERS), DEBUG or not;
        # runserver's own static handler answered /static/%2e%2e/... with a 500.
        call_command("runserver", addrport, use_reloader=False, use_threading=True, use_static_handler=False)

    def _start_worker(self) -> subprocess.Popen:
        command = worker_command()
        log_path = settings.VAR_DIR / "worker.log"
        log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the worker
        self.stdout.write(f"Celery worker started (log: {log_path})")
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    @staticmethod
    def _stop(worker: subprocess.Popen) -> None:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
