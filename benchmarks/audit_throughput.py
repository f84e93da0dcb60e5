"""Benchmark: audited writes per second under 1, 4 and 16 concurrent writers (issue #17).

Not a test. Each writer is a process of its own (its own database connection, as a
gunicorn or Celery worker has) that, for ``--seconds``, runs what every service does:
``transaction.atomic()`` around one change and its ``audit.chain.record_event``. It
prints, per writer count, the audited writes per second (the median of ``--runs`` runs)
and where each write's time went:

- ``wait``: waiting for the chain lock (another writer holds it);
- ``held``: from the lock granted to the end of ``record_event`` (read the head, hash, insert);
- ``commit``: the COMMIT, while the lock is still held (it is released with the transaction);
- ``total``: the whole transaction, median and 95th percentile.

The chain is verified (``verify_chain``) after all runs: a throughput bought with a
forked or broken chain fails the benchmark.

Like ``verify_audit.py`` it only ever writes to a database it creates: a new database
``mpi_bench_audit_<random>`` on the server ``--postgres`` names (a server, not a database
to use), dropped at the end. ``DATABASE_URL`` is ignored.

    .venv/bin/python benchmarks/audit_throughput.py
    .venv/bin/python benchmarks/audit_throughput.py --writers 1,4,16 --seconds 5 --runs 3
    .venv/bin/python benchmarks/audit_throughput.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_PER_SECOND = 200  # with 16 writers (issue #17)
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _writer(index: int, seconds: float, start, results) -> None:
    """One writer: audited writes in a loop until ``seconds`` have passed; its timings to ``results``."""
    from django.db import connection, transaction

    import audit.chain as chain
    from audit.actions import AuditAction
    from audit.models import AuditEvent

    connection.close()  # never share the parent's connection
    real_lock = chain._lock_chain_head
    waits: list[float] = []

    def timed_lock():  # the lock (and, since issue #17, the head's read with it)
        began = time.perf_counter()
        head = real_lock()
        waits.append(time.perf_counter() - began)
        return head

    chain._lock_chain_head = timed_lock  # the benchmark times the lock wait
    connection.ensure_connection()
    rows: list[tuple[float, float, float, float]] = []
    start.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        with transaction.atomic():
            # The change the event records: a read in the same transaction, as a service's
            # full_clean and save would make (the event itself is the write measured).
            AuditEvent.objects.filter(object_type="bench", object_id=str(index)).exists()
            chain.record_event(
                actor=None,
                action=AuditAction.SUBJECT_UPDATED,
                object_type="bench",
                object_id=index,
                trial_id=1,
                site_id=1 + index % 2,
                changes={"status": ["screening", "enrolled"], "weight_kg": [70.5, 71.0]},
                reason="benchmark",
            )
            recorded = time.perf_counter()
        committed = time.perf_counter()
        wait = waits[-1]
        rows.append((wait, recorded - began - wait, committed - recorded, committed - began))
    connection.close()
    results.put(rows)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(writers: int, seconds: float) -> dict[str, float]:
    from django.db import connections

    connections.close_all()  # the children open their own
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    procs = [context.Process(target=_writer, args=(i, seconds, start, results)) for i in range(writers)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # every writer connected
    began = time.perf_counter()
    start.set()
    rows = [row for _ in procs for row in results.get(timeout=seconds + 120)]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a writer exited with {proc.exitcode}")
    ms = 1000.0
    return {
        "writes": len(rows),
        "rate": len(rows) / elapsed,
        "wait": statistics.median(r[0] for r in rows) * ms,
        "held": statistics.median(r[1] for r in rows) * ms,
        "commit": statistics.median(r[2] for r in rows) * ms,
        "total": statistics.median(r[3] for r in rows) * ms,
        "p95": _percentile([r[3] for r in rows], 0.95) * ms,
    }


def run(writer_counts: list[int], seconds: float, runs: int, database_url: str, tmp: str) -> int:
    os.environ["MPI_VAR_DIR"] = tmp
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.pop("MPI_ENV", None)
    os.environ["LOG_LEVEL"] = "WARNING"  # not a line per checkpoint
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from audit.chain import verify_chain

    call_command("migrate", verbosity=0)  # a database of its own, made for this run
    print(f"database: {connection.vendor}; {runs} run(s) of {seconds:g} s per writer count", file=sys.stderr)
    header = f"{'writers':>7}{'writes/s':>10}{'runs (writes/s)':>28}{'wait ms':>9}{'held ms':>9}{'commit ms':>11}{'total ms':>10}{'p95 ms':>8}"
    print(header)
    best_16 = None
    for writers in writer_counts:
        results = [measure(writers, seconds) for _ in range(runs)]
        median = statistics.median(r["rate"] for r in results)
        mid = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
        each = ", ".join(f"{r['rate']:.0f}" for r in results)
        print(
            f"{writers:>7}{median:>10.0f}{each:>28}{mid['wait']:>9.2f}{mid['held']:>9.2f}"
            f"{mid['commit']:>11.2f}{mid['total']:>10.2f}{mid['p95']:>8.2f}",
            flush=True,
        )
        if writers == 16:
            best_16 = median
    result = verify_chain()
    print(
        f"chain: {'OK' if result.ok else 'BROKEN: ' + result.problem}, {result.events_checked:,} events verified"
        + (f"; 16 writers: {best_16:.0f}/s against the target {TARGET_PER_SECOND}/s" if best_16 else "")
    )
    return 0 if result.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres", metavar="URL", default=DEFAULT_SERVER, help="the server to create the database on"
    )
    parser.add_argument("--writers", default="1,4,16", help="comma-separated writer counts (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per writer count; the median is reported")
    args = parser.parse_args()
    try:
        counts = [int(c) for c in args.writers.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--writers {args.writers!r}: give whole numbers, e.g. 1,4,16")
    if not counts or min(counts) < 1 or args.runs < 1 or args.seconds <= 0:
        parser.error("--writers, --runs and --seconds must be positive")

    # The project root first: this folder holds live.py, which must not shadow the live app.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.verify_audit import throwaway_database

    tmp = tempfile.mkdtemp(prefix="mpi-bench-audit-")
    with throwaway_database(args.postgres, tmp) as url:
        return run(counts, args.seconds, args.runs, url, tmp)


if __name__ == "__main__":
    raise SystemExit(main())
