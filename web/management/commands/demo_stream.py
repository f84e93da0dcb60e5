"""Stream the demo's simulated injection into a new live session of the running platform."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.errors import RuleViolation
from web.demo_stream import start_demo_stream


class Command(BaseCommand):
    help = (
        "Open a live session for the demo injection and replay its simulated stream into it through the "
        "bridge (the platform must be running: ./run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running platform (default %(default)s)")
        parser.add_argument("--speed", type=float, default=1.0, help="replay speed: 1 = the acquisition rate")
        parser.add_argument("--detach", action="store_true", help="start the bridge and return at once")

    def handle(self, *args, url, speed, detach, **options):
        if settings.PRODUCTION:
            raise CommandError("demo_stream refuses to run with MPI_ENV=production.")
        if not speed > 0:
            raise CommandError("--speed must be > 0.")
        try:
            demo = start_demo_stream(base_url=url.rstrip("/"), speed=speed)
        except RuleViolation as refusal:
            raise CommandError(refusal.message) from None
        page = f"{url.rstrip('/')}/live/{demo.session.pk}/"
        self.stdout.write(f"Live session {demo.session.pk} opened; watch it at {page}")
        self.stdout.write("Bridge: " + " ".join(demo.command))
        if detach:
            return
        while demo.process.poll() is None:
            time.sleep(0.5)
        if demo.process.returncode != 0:
            raise CommandError(f"the bridge exited with status {demo.process.returncode} (see var/demo-stream-*.log)")
        self.stdout.write(self.style.SUCCESS(f"Stream complete: {page}"))
