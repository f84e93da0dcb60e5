"""``python manage.py live_worker [--once] [--session ID]``: a production live worker.

Loops: claim one session whose lease is free (``live.runner.claim_session``), work it
until its stream ends (the lease renewed every ``LIVE_LEASE_RENEW_S`` s), claim the next.
SIGTERM / SIGINT stop it cleanly: the block in hand is finished and checkpointed, the
session's lease given back, so the next worker resumes it at once. A killed worker's
session is taken over when its lease (``LIVE_LEASE_S``) runs out.

While idle it prepares what the next sessions need (``runner.prepare_waiting``: the engines
of open sessions, the active calibrations), so a stream's start finds them in the cache.

``--once``: work at most one session, then exit (0 also when there was none).
``--session ID``: claim only that session.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand
from django.db import close_old_connections, connection

from live import runner

IDLE_POLL_S = 1.0


class Command(BaseCommand):
    help = "Run live monitoring workers' loop: claim a streaming session, process its frames, repeat."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="work at most one session, then exit")
        parser.add_argument("--session", type=int, default=None, help="claim only this session")

    def handle(self, *args, once: bool = False, session: int | None = None, **options):
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        worker_id = runner.new_worker_id()
        worked = 0
        prepared: set = set()
        try:
            while not stop.is_set():
                if not connection.in_atomic_block:  # (a test's transaction)
                    close_old_connections()
                claimed = runner.claim_session(worker_id, session_id=session)
                if claimed is None:
                    if once:
                        break
                    if not runner.prepare_waiting(prepared):
                        stop.wait(IDLE_POLL_S)
                    continue
                self.stdout.write(f"live worker {worker_id}: session #{claimed}")
                status = runner.run_claimed(claimed, worker_id, stop=stop)
                worked += 1
                self.stdout.write(f"live worker {worker_id}: session #{claimed} {status or 'released'}")
                if once:
                    break
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.stdout.write(f"live worker {worker_id}: stopped after {worked} session(s)")
