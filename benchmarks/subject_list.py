"""Latency of GET /api/v1/subjects/ (default page size) with 100 and with 10,000 subjects.

A script, not a test: it builds a throwaway SQLite database in a temporary folder
(MPI_VAR_DIR), seeds subjects with bulk_create and times the endpoint with Django's
test Client, authenticated by API token as a trial-wide monitor.

    .venv/bin/python benchmarks/subject_list.py [--requests 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per size (>= 50)")
    args = parser.parse_args()
    if args.requests < 50:
        parser.error("--requests must be at least 50")

    workdir = tempfile.mkdtemp(prefix="mpi-bench-")
    os.environ["MPI_VAR_DIR"] = workdir  # the embedded default puts its SQLite file here
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["LOG_LEVEL"] = "WARNING"

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from compliance.tokens import token_issue
    from trials.models import Membership, Role, Site, Subject, Trial

    call_command("migrate", verbosity=0)
    trial = Trial.objects.create(protocol_number="BENCH-001", title="Benchmark", phase="I")
    sites = [Site.objects.create(trial=trial, code=c, name=f"Site {c}", time_zone="UTC") for c in ("A", "B")]
    monitor = get_user_model().objects.create_user("bench_monitor", password="bench-password-2026")
    Membership.objects.create(user=monitor, trial=trial, role=Role.MONITOR)
    token = token_issue(user=monitor, name="subject-list benchmark")
    client = Client(HTTP_AUTHORIZATION=f"Token {token.key}")

    def seed_to(total: int) -> None:
        have = Subject.objects.count()
        today = timezone.localdate()
        Subject.objects.bulk_create(
            [
                Subject(
                    trial=trial,
                    site=sites[i % 2],
                    code=f"BENCH-001-{'AB'[i % 2]}-{i:05d}",
                    enrolment_date=today,
                    status="enrolled",
                )
                for i in range(have, total)
            ],
            batch_size=2000,
        )

    results = {}
    for size in (100, 10_000):
        seed_to(size)
        for _ in range(5):  # warm caches and the connection
            assert client.get("/api/v1/subjects/").status_code == 200
        samples = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get("/api/v1/subjects/")
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content[:200]
        body = response.json()
        assert body["count"] == size
        results[size] = (statistics.median(samples), _percentile(samples, 95), len(body["results"]))

    print(
        f"GET /api/v1/subjects/  ({connection.vendor}, {args.requests} requests per size, page of "
        f"{results[100][2]} rows)"
    )
    print(f"{'subjects':>10} {'p50 ms':>9} {'p95 ms':>9}")
    for size, (p50, p95, _) in results.items():
        print(f"{size:>10,} {p50:>9.2f} {p95:>9.2f}")


if __name__ == "__main__":
    main()
