import json
import time

from django.core.management.base import BaseCommand, CommandError

from audit.chain import verify_chain


class Command(BaseCommand):
    help = (
        "Walk the audit trail's keyed hash chain from the first event, check it against the signed checkpoints "
        "in AUDIT_CHECKPOINT_DIR, and name the first problem (exit status 1)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args, **options):
        started = time.perf_counter()
        result = verify_chain()
        elapsed = time.perf_counter() - started
        if options["json"]:
            self.stdout.write(json.dumps({**result.as_dict(), "seconds": round(elapsed, 3)}))
        elif result.ok:
            legacy = (
                f"; events #1-#{result.legacy_unkeyed_through} predate the key, anchored by a checkpoint"
                if result.legacy_unkeyed_through
                else ""
            )
            self.stdout.write(
                f"OK: {result.events_checked} events verified in {elapsed:.2f} s; "
                f"head #{result.head_sequence} {result.head_hash}; "
                f"{result.checkpoints_checked} checkpoints matched{legacy}"
            )
        if not result.ok:
            where = (
                f"at event #{result.first_broken_sequence}" if result.first_broken_sequence else "in its checkpoints"
            )
            raise CommandError(
                f"audit trail broken {where}: {result.problem} ({result.events_checked} events before it verified)"
            )
