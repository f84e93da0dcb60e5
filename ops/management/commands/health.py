"""``manage.py health``: readiness on the command line, or one worker's heartbeat.

    manage.py health              # every readiness check; exit 1 when one fails
    manage.py health --worker     # this host's worker (celery@<hostname>) has beaten recently
    manage.py health --worker celery@recon-1

The compose health checks of the worker containers run ``--worker``.
"""

from __future__ import annotations

import json
import socket

from django.core.management.base import BaseCommand, CommandError

from ops import health


class Command(BaseCommand):
    help = "Readiness checks, or whether a Celery worker's heartbeat is fresh (exit 1 when not)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--worker",
            nargs="?",
            const="",
            metavar="NODE",
            help="check only this worker's heartbeat (default node: celery@<this host>)",
        )

    def handle(self, *args, worker=None, **options):
        if worker is not None:
            ok, message = health.worker_alive(worker or f"celery@{socket.gethostname()}")
            if not ok:
                raise CommandError(message)
            self.stdout.write(message)
            return
        ok, body = health.readiness()
        self.stdout.write(json.dumps(body, sort_keys=True))
        if not ok:
            raise CommandError(f"not ready: {', '.join(body['failed'])}")
