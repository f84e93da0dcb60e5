"""Benchmark: audited writes per second under 1, 4 and 16 concurrent writers (issue #17).

Not a test. Each writer is a process of its own (its own database connection, as a
gunicorn or Celery worker has) that, for ``--seconds``, runs what every service does:
``transaction.atomic()`` around one change and its ``audit.chain.record_event``. Per
writer count it runs both ways of extending the chain, alternately, ``--runs`` times each:

- ``before``: the event chained in the writer's transaction, the chain lock held to its
  COMMIT (the only way before issue #17; ``record_event(sealed=True)`` still does it);
- ``after``: the event written pending, chained after the commit, in batches, by
  whichever writer holds the lock (the default on PostgreSQL since issue #17): a writer
  that finds the lock taken leaves its event to the holder and never waits;

and prints side by side the audited writes per second (the median of the runs), each
write's whole time (the chaining after its commit included; median and 95th percentile),
before its wait for the chain lock, after the time its chaining after the commit took,
how many events one chaining chains, and the CPU time per write (the writers' and their
PostgreSQL backends'). The machine's other load shows in every figure: compare the two
modes of one run, and repeat.

The chain is verified (``verify_chain``) after all runs, and no event may be left pending:
a throughput bought with a forked or broken chain, or with events never chained, fails the
benchmark.

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


MODES = {
    # The behaviour before issue #17: each event chained in its writer's transaction, under
    # the chain lock held to its COMMIT (what record_event(sealed=True) still does).
    "before": True,
    # Since issue #17: written pending, chained after the commit in batches.
    "after": False,
}


def _writer(index: int, seconds: float, sealed: bool, start, results) -> None:
    """One writer: audited writes in a loop until ``seconds`` have passed; its timings to ``results``."""
    from django.db import connection, transaction

    import audit.chain as chain
    from audit.actions import AuditAction
    from audit.models import AuditEvent

    connection.close()  # never share the parent's connection
    real_lock, real_after, real_round = chain._lock_and_read, chain._seal_after_commit, chain._chain_round
    waits: list[float] = []
    chaining: list[float] = []
    chained: list[int] = []

    def timed_lock(cursor, **kwargs):  # before: the lock wait (with the head's and the pending events' read)
        began = time.perf_counter()
        out = real_lock(cursor, **kwargs)
        waits.append(time.perf_counter() - began)
        return out

    def timed_after():  # after: the whole chaining after the commit
        began = time.perf_counter()
        real_after()
        chaining.append(time.perf_counter() - began)

    def counted_round():
        out = real_round()
        chained.append(out[0])
        return out

    chain._lock_and_read = timed_lock
    chain._seal_after_commit = timed_after
    chain._chain_round = counted_round
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    rows: list[tuple[float, float]] = []
    start.wait()
    cpu_began = _cpu_seconds(backend)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        waits.clear()
        chaining.clear()
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
                sealed=sealed,
            )
        # Leaving the block commits, then (after) runs the chaining: timed apart.
        committed = time.perf_counter()
        rows.append((sum(waits) + sum(chaining), committed - began))
    cpu = _cpu_seconds(backend) - cpu_began
    connection.close()
    results.put((rows, [n for n in chained if n], cpu))


def _cpu_seconds(backend_pid: int) -> float:
    """CPU time used so far by this process and its PostgreSQL backend (a local server:
    its /proc entry is readable), user and system; 0 for the backend if it is not."""
    own = os.times()
    total = own.user + own.system
    try:
        fields = Path(f"/proc/{backend_pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    return total


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(writers: int, seconds: float, sealed: bool) -> dict[str, float]:
    from django.db import connections

    connections.close_all()  # the children open their own
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    procs = [context.Process(target=_writer, args=(i, seconds, sealed, start, results)) for i in range(writers)]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # every writer connected
    began = time.perf_counter()
    start.set()
    rows: list[tuple] = []
    batches: list[int] = []
    cpu = 0.0
    for _ in procs:
        writer_rows, writer_batches, writer_cpu = results.get(timeout=seconds + 120)
        rows += writer_rows
        batches += writer_batches
        cpu += writer_cpu
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a writer exited with {proc.exitcode}")
    ms = 1000.0
    return {
        "writes": len(rows),
        "rate": len(rows) / elapsed,
        "wait": statistics.median(r[0] for r in rows) * ms,  # before: the lock wait; after: the chaining
        "total": statistics.median(r[1] for r in rows) * ms,
        "p95": _percentile([r[1] for r in rows], 0.95) * ms,
        "batch": (sum(batches) / len(batches)) if batches else 1.0,
        "cpu": cpu / len(rows) * ms,  # CPU ms per write: the writers and their PostgreSQL backends
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
    print(
        f"database: {connection.vendor}; {runs} run(s) of {seconds:g} s per writer count and mode, "
        "the modes alternating; the CPU (2 cores) is shared with whatever else runs",
        file=sys.stderr,
    )
    print(
        "before: chained in the writer's transaction, lock held to its COMMIT; "
        "after: written pending, chained after the commit in batches (issue #17)"
    )
    print(
        f"{'':>7}{'writes/s (median of runs)':^37}{'total ms (median)':^21}{'p95 ms':^17}"
        f"{'lock wait/chain':^17}{'':>7}{'CPU ms/write':^17}"
    )
    print(
        f"{'writers':>7}{'before':>9}{'after':>8}{'x':>6}{'runs after':>14}{'before':>10}{'after':>11}"
        f"{'before':>9}{'after':>8}{'before':>9}{'after':>8}{'batch':>7}{'before':>9}{'after':>8}"
    )
    rate_16 = None
    for writers in writer_counts:
        results: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(runs):
            for mode, sealed in MODES.items():
                results[mode].append(measure(writers, seconds, sealed))
        median = {mode: statistics.median(r["rate"] for r in rs) for mode, rs in results.items()}
        mid = {mode: sorted(rs, key=lambda r: r["rate"])[len(rs) // 2] for mode, rs in results.items()}
        each = "/".join(f"{r['rate']:.0f}" for r in results["after"])
        b, a = mid["before"], mid["after"]
        print(
            f"{writers:>7}{median['before']:>9.0f}{median['after']:>8.0f}{median['after'] / median['before']:>6.1f}"
            f"{each:>14}{b['total']:>10.2f}{a['total']:>11.2f}{b['p95']:>9.1f}{a['p95']:>8.1f}"
            f"{b['wait']:>9.2f}{a['wait']:>8.2f}{a['batch']:>7.1f}{b['cpu']:>9.2f}{a['cpu']:>8.2f}",
            flush=True,
        )
        if writers == 16:
            rate_16 = median["after"]
    result = verify_chain()
    pending = _pending_count()
    print(
        f"chain: {'OK' if result.ok else 'BROKEN: ' + result.problem}, {result.events_checked:,} events verified, "
        f"{pending} pending"
        + (f"; 16 writers: {rate_16:.0f}/s against the target {TARGET_PER_SECOND}/s" if rate_16 else "")
    )
    print(
        "total: the writer's whole transaction, the chaining after its commit included; lock wait/chain: "
        "before, the wait for the chain lock in the transaction; after, the chaining after the commit (median); "
        "batch: events chained per chaining that chained any (after); CPU ms/write: the writers' and their PostgreSQL "
        "backends' CPU time per write (other server processes, the WAL writer's, left out): "
        f"{os.cpu_count()} idle cores would bound the rate at about {os.cpu_count()} x 1000 / that"
    )
    return 0 if result.ok and pending == 0 else 1


def _pending_count() -> int:
    from audit.models import AuditEvent

    return AuditEvent.objects.filter(hash=None).count()


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
