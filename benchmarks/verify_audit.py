"""Benchmark: audit-trail verification throughput (events verified per second).

Not a test. Fills a throwaway database with N chained (HMAC-keyed) audit events (default 1,000,000),
then times ``audit.chain.verify_chain`` over all of them and prints the rate against
the target (100,000 events/s on the 2-core CI machine).

    .venv/bin/python benchmarks/verify_audit.py                 # throwaway SQLite file
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/mpi_bench_audit .venv/bin/python benchmarks/verify_audit.py
    .venv/bin/python benchmarks/verify_audit.py --events 200000  # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_PER_SECOND = 100_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    tmp = tempfile.mkdtemp(prefix="mpi-bench-audit-")
    os.environ.setdefault("MPI_VAR_DIR", tmp)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from audit.actions import AuditAction
    from audit.chain import GENESIS_HASH, canonical_payload, chain_hash, verify_chain
    from audit.keys import keyring
    from audit.models import AuditEvent

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # a clean schema every run
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)

    print(f"database: {connection.vendor}; seeding {args.events:,} chained events ...", file=sys.stderr)
    started = time.perf_counter()
    ring = keyring()  # keyed like record_event: HMAC-SHA256 under the current key
    prev = GENESIS_HASH
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    batch = []
    for sequence in range(1, args.events + 1):
        fields: dict[str, Any] = dict(
            sequence=sequence,
            occurred_at=base + dt.timedelta(milliseconds=sequence),
            actor_id=None,
            actor_username=f"user{sequence % 17}",
            action=int(AuditAction.SUBJECT_UPDATED),
            object_type="subject",
            object_id=str(sequence % 5000),
            trial_id=1,
            site_id=1 + sequence % 2,
            subject_id=sequence % 5000,
            changes={"status": ["screening", "enrolled"], "weight_kg": [70.5, 71.0]},
            reason="source data verified",
            request_id=f"{sequence:032x}",
            client_address="10.0.0.1",
        )
        digest = chain_hash(prev, canonical_payload(**fields), key=ring.current)
        batch.append(AuditEvent(prev_hash=prev, hash=digest, key_id=ring.current_id, **fields))
        prev = digest
        if len(batch) == 20_000:
            AuditEvent.objects.bulk_create(batch)
            batch.clear()
    AuditEvent.objects.bulk_create(batch)
    print(f"seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    started = time.perf_counter()
    result = verify_chain()
    elapsed = time.perf_counter() - started
    rate = result.events_checked / elapsed
    print(f"{'database':<12}{'events':>12}{'seconds':>10}{'events/s':>12}{'target':>10}{'ratio':>8}  result")
    print(
        f"{connection.vendor:<12}{result.events_checked:>12,}{elapsed:>10.2f}{rate:>12,.0f}"
        f"{TARGET_PER_SECOND:>10,}{rate / TARGET_PER_SECOND:>7.2f}x  "
        f"{'OK' if result.ok else 'BROKEN'} head={result.head_hash[:16]}"
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
