import json
import time

from django.core.management.base import BaseCommand, CommandError

from compliance.audit import verify_chain


class Command(BaseCommand):
    help = "Walk the audit trail's hash chain from the first event and name the first broken event."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options):
        started = time.perf_counter()
        result = verify_chain()
        elapsed = time.perf_counter() - started
        if options["json"]:
            self.stdout.write(json.dumps({**result.as_dict(), "seconds": round(elapsed, 3)}))
        elif result.ok:
            self.stdout.write(
                f"OK: {result.events_checked} events verified in {elapsed:.2f} s; "
                f"head #{result.head_sequence} {result.head_hash}"
            )
        if not result.ok:
            raise CommandError(
                f"audit trail broken at event #{result.first_broken_sequence}: {result.problem} "
                f"({result.events_checked} events before it verified)"
            )
