"""Benchmark: audit-trail verification throughput (events verified per second).

Not a test. Fills a throwaway database with N chained (HMAC-keyed) audit events (default 1,000,000),
then times ``audit.chain.verify_chain`` over all of them and prints the rate against
the target (100,000 events/s on the 2-core CI machine).

It only ever writes to a database it creates: a SQLite file in a temporary folder, or, given
``--postgres URL`` (a server, not a database to use), a new database ``mpi_bench_audit_<random>``
on that server, dropped at the end. ``DATABASE_URL`` is ignored: a benchmark never touches
data it did not create.

    .venv/bin/python benchmarks/verify_audit.py                 # throwaway SQLite file
    .venv/bin/python benchmarks/verify_audit.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/verify_audit.py --events 200000  # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TARGET_PER_SECOND = 100_000


@contextlib.contextmanager
def throwaway_database(server_url: str | None, tmp: str) -> Iterator[str]:
    """The URL of a database made for this run, removed afterwards (SQLite: a file in
    ``tmp``; PostgreSQL: ``CREATE DATABASE`` on the server, ``DROP DATABASE`` at the end)."""
    if server_url is None:
        yield f"sqlite:///{tmp}/bench.sqlite3"
        return
    import psycopg

    name = f"mpi_bench_audit_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        from django.conf import settings

        if settings.configured:  # the run's connection closes before its database goes
            from django.db import connections

            connections.close_all()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to create the throwaway database on")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    tmp = tempfile.mkdtemp(prefix="mpi-bench-audit-")
    with throwaway_database(args.postgres, tmp) as url:
        return run(args.events, url, tmp)


def run(events: int, database_url: str, tmp: str) -> int:
    os.environ["MPI_VAR_DIR"] = tmp
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from audit.actions import AuditAction
    from audit.chain import GENESIS_HASH, canonical_payload, chain_hash, verify_chain
    from audit.keys import keyring
    from audit.models import AuditEvent

    call_command("migrate", verbosity=0)  # a database of its own, made for this run

    print(f"database: {connection.vendor}; seeding {events:,} chained events ...", file=sys.stderr)
    started = time.perf_counter()
    ring = keyring()  # keyed like record_event: HMAC-SHA256 under the current key
    prev = GENESIS_HASH
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    batch = []
    for sequence in range(1, events + 1):
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
