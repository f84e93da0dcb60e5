"""Benchmark: scan pipeline throughput with 1 and 2 reconstruction workers (issue #17).

Not a test. The production shape on one machine: PostgreSQL, Redis, one Celery worker on
each of the ingest (``--concurrency 2``), quant and export queues and N workers on the recon
queue (``--concurrency 1 --max-tasks-per-child 50``), the commands of ``docker-compose.yml``. For
each recon worker count (default 1, then 2) and each of ``--runs`` rounds:

1. the workers are started and waited for (ready);
2. ``--scans`` simulated 2D scans (``recon.simulate``, the demo's 12 x 12 grid and short
   frames; each with its own noise, so no two have the same bytes) are uploaded through the
   upload services (``upload_create`` / ``upload_append``, as the tus API calls them), each
   queued when its upload completes: a row in the outbox. The after-commit hand-off to the
   broker is held back meanwhile, so that the uploads (one process, one after another) do
   not set the pace;
3. the clock starts; the outbox relay (``outbox.relay.relay``, as beat's relay delivers what
   waited through a broker outage) hands the whole batch to Redis at once, and the clock
   stops when the last scan is ``quantified``; the workers stop.

It prints, per recon worker count, the median over the runs of scans per minute and of the
per-scan stage times (from the audit trail's status changes: waiting for validation from the
hand-off, validation, waiting for a recon worker, reconstruction, reconstructed to metrics,
hand-off to metrics), the CPU time the workers used per scan (all of them, and the recon
workers'; unlike the times, it hardly depends on what else runs on the machine: the cores
divided by it bound the rate on an idle machine), with the ratio 2 vs 1 workers, and how the
reconstructions split over the recon workers. It fails (exit 1) unless every scan ended ``quantified`` with exactly one
reconstruction, one set of metrics (one measurement per region, all of that one
reconstruction) and one RECONSTRUCTION_COMPLETED and one METRICS_RECORDED event.

It only writes to what it creates: a new database ``mpi_bench_audit_<random>`` on the
PostgreSQL server ``--postgres`` names (a server, not a database to use), dropped at the
end; a redis-server of its own on a free loopback port, without persistence, stopped at
the end; its media and var folders in a temporary folder, removed at the end (kept with
the workers' logs when the run fails). ``DATABASE_URL`` and ``CELERY_BROKER_URL`` are ignored.

    .venv/bin/python benchmarks/pipeline_throughput.py
    .venv/bin/python benchmarks/pipeline_throughput.py --scans 80 --runs 3 --recon-workers 1,2,4
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_GRID = 12  # the demo scans' 12 x 12 grid (imaging/management/commands/load_demo_scans.py)

# Per-scan stages, from the status changes in the audit trail: (label, from status, to status);
# "queued": the batch's hand-off to the broker.
STAGES = (
    ("wait for validation", "queued", "validating"),
    ("validation", "validating", "validated"),
    ("wait for recon worker", "validated", "reconstructing"),
    ("reconstruction", "reconstructing", "reconstructed"),
    ("reconstructed to metrics", "reconstructed", "quantified"),
    ("queued to metrics", "queued", "quantified"),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the benchmark's own, without persistence, on a free loopback port."""

    def __init__(self, executable: str, workdir: Path):
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


class Worker:
    """A Celery worker process on the benchmark's database, broker and folders."""

    def __init__(self, name: str, queues: str, extra: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", queues, *extra]
        command += ["-n", f"{name}@%h", "--loglevel", "INFO"]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A session of its own: an interrupt of the benchmark reaches the workers through stop() only.
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return "ready." in self.log()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the worker and its pool processes."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def succeeded(self, task: str) -> int:
        return sum(1 for line in self.log().splitlines() if f"Task {task}[" in line and " succeeded in " in line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # a warm shutdown: the worker finishes nothing more, it is idle
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the worker and its pool
                self.process.wait(timeout=10)
        self._log.close()


def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


# --------------------------------------------------------------------------- the trial and the scans


def prepare(tmp: Path, count: int, side: int) -> dict:
    """The demo trial, a simulated scanner and a ``side`` x ``side`` calibration at site A, the
    phantom's regions for one subject, and ``count`` simulated scans of that subject (files in ``tmp``)."""
    grid = (side, side, 1)
    import dataclasses

    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from imaging import selectors
    from imaging.services.rois import roi_define
    from imaging.services.scanners import simulated_scanner_register, system_matrix_register
    from recon import phantoms
    from recon import simulate as sim
    from recon.physics import Particles
    from trials.models import Injection

    with open(os.devnull, "w") as quiet:
        call_command("load_demo", stdout=quiet)
    rng = np.random.default_rng(2026)
    model = sim.scanner_preset(2, fast=True)
    background = sim.scanner_background_spectrum(model, rng, sim.DEFAULT_NOISE_STD_V)
    # The first demo subject at site A: imaging, longitudinal imaging and data sharing consented.
    injection = (
        Injection.objects.filter(subject__site__code="A")
        .select_related("subject__site", "batch")
        .order_by("id")
        .first()
    )
    if injection is None:
        raise RuntimeError("load_demo made no injection at site A")
    subject = injection.subject
    scanner = simulated_scanner_register(actor=None, site=subject.site, name="Benchmark MPI (simulated)", model=model)
    matrix = sim.simulate_system_matrix(model, Particles(), grid, rng=rng, background_spectrum=background)
    calibration = tmp / "system_matrix.mdf"
    sim.write_system_matrix_mdf(str(calibration), matrix)
    system_matrix_register(
        actor=None,
        scanner=scanner,
        name=f"Benchmark {side}x{side} calibration",
        tracer_product=injection.batch.nanoparticle_lot.product if injection.batch.nanoparticle_lot else "VivoTrax",
        source_path=calibration,
    )
    injected_ng = selectors.injected_iron_ng(injection)
    layout = phantoms.mouse(matrix.fov_m, dims=2, target_iron_ng=1.0)
    for inclusion in layout:
        roi = inclusion.as_roi()
        roi_define(actor=None, subject=subject, name=roi.pop("name"), kind=roi.pop("kind"), geometry=roi)
    amounts = {"target": 0.6 * injected_ng, "lungs": 0.04 * injected_ng, "liver": 0.2 * injected_ng}
    inclusions = tuple(dataclasses.replace(inc, iron_ng=amounts[inc.kind]) for inc in layout)
    raster = phantoms.rasterise(inclusions, grid, matrix.fov_m, matrix.center_m, factor=3, dims=2)
    files = []
    for index in range(count):
        scan = sim.simulate_scan(model, Particles(), raster, rng=rng, frames=10, background_spectrum=background)
        path = tmp / f"scan-{index:04d}.mdf"
        sim.write_scan_mdf(str(path), scan)
        files.append(path)
    uploader = get_user_model().objects.get(username="imaging_a")
    return {"injection": injection, "scanner": scanner, "files": files, "uploader": uploader, "regions": len(layout)}


def upload(setup: dict, path: Path, hours: float) -> int:
    """One scan through the upload services, queued (the outbox) when its upload completes."""
    from imaging import tasks
    from imaging.services.scan_uploads import UploadRequest, upload_append, upload_create

    data = path.read_bytes()
    injection = setup["injection"]
    created = upload_create(
        actor=setup["uploader"],
        request=UploadRequest(
            subject=injection.subject,
            injection_id=injection.pk,
            scanner_id=setup["scanner"].pk,
            hours_after_injection=hours,
            sha256=hashlib.sha256(data).hexdigest(),
            filename=path.name,
            length=len(data),
        ),
    )
    with open(path, "rb") as fh:
        outcome = upload_append(
            actor=setup["uploader"], upload=created, offset=0, source=fh, checksum=None, then=tasks.queue_next_step
        )
    if outcome.scan is None:
        raise RuntimeError(f"the upload of {path.name} did not complete")
    return outcome.scan.pk


# --------------------------------------------------------------------------- one batch


def start_workers(recon: int, env: dict, log_dir: Path, tag: str, started: list[Worker]) -> list[Worker]:
    """The ingest, quant and export workers and ``recon`` recon workers (returned), each in
    ``started`` as soon as it runs (the caller stops them whatever happens)."""
    started.append(Worker(f"ingest-{tag}", "ingest", ["--concurrency", "2"], env, log_dir))
    started.append(Worker(f"quant-{tag}", "quant", ["--concurrency", "1"], env, log_dir))
    started.append(Worker(f"export-{tag}", "export", ["--concurrency", "1"], env, log_dir))
    recon_args = ["--concurrency", "1", "--max-tasks-per-child", "50"]
    for i in range(recon):
        started.append(Worker(f"recon{i + 1}-{tag}", "recon", recon_args, env, log_dir))
    for worker in started:
        _wait(worker.ready, 120, f"worker {worker.name} to start")
    return started[3:]


def upload_held(setup: dict, files: list[Path]) -> list[int]:
    """The batch uploaded, each scan's first step a pending outbox row: the after-commit
    hand-off to the broker held back until ``relay`` sends them all."""
    import outbox.relay as outbox_relay

    hand_off = outbox_relay.relay_quietly
    outbox_relay.relay_quietly = lambda ids=None: 0
    try:
        return [upload(setup, path, hours=1.0 + index / 100) for index, path in enumerate(files)]
    finally:
        outbox_relay.relay_quietly = hand_off


def batch(setup: dict, files: list[Path], recon: int, env: dict, log_dir: Path, tag: str, timeout: float) -> dict:
    from imaging.models import Scan
    from outbox.relay import pending_count, relay

    workers: list[Worker] = []
    try:
        recons = start_workers(recon, env, log_dir, tag, workers)
        began = time.perf_counter()
        ids = upload_held(setup, files)
        uploaded = time.perf_counter() - began
        if pending_count() != len(ids):
            raise RuntimeError(f"{pending_count()} outbox rows pending for {len(ids)} uploads")
        cpu_began = {w.name: w.cpu_seconds() for w in workers}
        began, queued_at = time.perf_counter(), time.time()
        sent = relay(limit=len(ids))  # the oldest rows first: the batch's, nothing else is pending yet
        if sent != len(ids):
            raise RuntimeError(f"the relay sent {sent} of the batch's {len(ids)} outbox rows")

        def done():
            settled = Scan.objects.filter(pk__in=ids, status__in=("quantified", "failed", "rejected")).count()
            return settled == len(ids)

        _wait(done, timeout, f"{len(ids)} scans to be quantified", interval=0.05)
        elapsed = time.perf_counter() - began
        cpu = {w.name: w.cpu_seconds() - cpu_began[w.name] for w in workers}
        time.sleep(0.5)  # let the workers write their last log lines
        split = [w.succeeded("imaging.reconstruct_scan") for w in recons]
    finally:
        for worker in workers:
            worker.stop()
    per_scan = {
        "worker CPU s per scan": sum(cpu.values()) / len(ids),
        "recon CPU s per scan": sum(cpu[w.name] for w in recons) / len(ids),
    }
    return {
        "ids": ids,
        "elapsed": elapsed,
        "uploaded": uploaded,
        "split": split,
        **per_scan,
        **stage_times(ids, queued_at),
    }


def stage_times(ids: list[int], queued_at: float) -> dict:
    """Median seconds per stage over the batch's scans, from the audited status changes;
    ``queued_at``: the hand-off of the batch to the broker (epoch seconds)."""
    from audit.actions import AuditAction
    from audit.models import AuditEvent

    reached: dict[int, dict[str, float]] = {}
    events = AuditEvent.objects.filter(
        action=AuditAction.SCAN_STATUS_CHANGED, object_id__in=[str(i) for i in ids]
    ).values_list("object_id", "changes", "occurred_at")
    for object_id, changes, occurred_at in events:
        status = (changes or {}).get("status")
        if status:
            reached.setdefault(int(object_id), {"queued": queued_at}).setdefault(status[1], occurred_at.timestamp())
    times = {}
    for label, start, end in STAGES:
        spans = [r[end] - r[start] for r in reached.values() if start in r and end in r]
        times[label] = statistics.median(spans) if spans else float("nan")
    times["p95 queued to metrics"] = _p95([r["quantified"] - queued_at for r in reached.values() if "quantified" in r])
    return times


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan")


def check_once(ids: list[int], regions: int) -> list[str]:
    """What is wrong with the batch: each scan quantified, one reconstruction, one set of metrics."""
    from django.db.models import Count

    from audit.actions import AuditAction
    from audit.models import AuditEvent
    from imaging.models import Measurement, Reconstruction, Scan

    problems = []
    for scan_id, status, reason in Scan.objects.filter(pk__in=ids).values_list("pk", "status", "status_reason"):
        if status != "quantified":
            problems.append(f"scan {scan_id} is {status}: {reason[:200]}")
    recons = dict(
        Reconstruction.objects.filter(scan_id__in=ids)
        .values("scan_id")
        .annotate(n=Count("id"))
        .values_list("scan_id", "n")
    )
    measurements = {
        row["scan_id"]: row
        for row in Measurement.objects.filter(scan_id__in=ids)
        .values("scan_id")
        .annotate(n=Count("id"), recons=Count("reconstruction_id", distinct=True))
    }
    scan_recon = dict(Reconstruction.objects.filter(scan_id__in=ids).values_list("pk", "scan_id"))
    completed = AuditEvent.objects.filter(action=AuditAction.RECONSTRUCTION_COMPLETED)
    metrics = AuditEvent.objects.filter(action=AuditAction.METRICS_RECORDED)
    per_scan_events: dict[int, list[int]] = {i: [0, 0] for i in ids}
    for column, events in ((0, completed), (1, metrics)):
        for object_id in events.filter(object_type="imaging.reconstruction").values_list("object_id", flat=True):
            owner = scan_recon.get(int(object_id))
            if owner in per_scan_events:
                per_scan_events[owner][column] += 1
    for scan_id in ids:
        if recons.get(scan_id) != 1:
            problems.append(f"scan {scan_id}: {recons.get(scan_id, 0)} reconstructions")
        row = measurements.get(scan_id, {"n": 0, "recons": 0})
        if row["n"] != regions or row["recons"] != 1:
            problems.append(f"scan {scan_id}: {row['n']} measurements from {row['recons']} reconstructions")
        if per_scan_events[scan_id] != [1, 1]:
            problems.append(
                f"scan {scan_id}: RECONSTRUCTION_COMPLETED, METRICS_RECORDED events {per_scan_events[scan_id]}"
            )
    return problems


# --------------------------------------------------------------------------- the run


def run(args, database_url: str, redis_url: str, tmp: Path) -> int:
    var = tmp / "var"
    var.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPI_ENV", "MEDIA_ROOT", "CELERY_RESULT_BACKEND")}
    env |= {
        "MPI_VAR_DIR": str(var),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)  # a database of its own, made for this run
    counts = args.recon_workers
    total = args.scans * args.runs * len(counts)
    print(f"preparing the demo trial and simulating {total} scans ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    setup = prepare(tmp, total, args.grid)
    print(f"prepared in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    worker_env = env | {"LOG_LEVEL": "INFO"}
    load_before = os.getloadavg()
    files = iter(setup["files"])
    results: dict[int, list[dict]] = {n: [] for n in counts}
    problems: list[str] = []
    for run_no in range(args.runs):
        order = counts if run_no % 2 == 0 else list(reversed(counts))  # alternate, so drift hits both alike
        for n in order:
            batch_files = [next(files) for _ in range(args.scans)]
            tag = f"r{run_no + 1}-w{n}"
            result = batch(setup, batch_files, n, worker_env, tmp, tag, args.timeout)
            problems += [f"{tag}: {p}" for p in check_once(result["ids"], setup["regions"])]
            results[n].append(result)
            rate = 60 * len(result["ids"]) / result["elapsed"]
            split = "/".join(str(s) for s in result["split"])
            print(
                f"run {run_no + 1}, {n} recon worker(s): {len(result['ids'])} scans in {result['elapsed']:.1f} s "
                f"({rate:.1f} scans/min; uploaded beforehand in {result['uploaded']:.1f} s; reconstructions per "
                f"recon worker {split})",
                file=sys.stderr,
                flush=True,
            )

    print(
        f"\n{args.scans} simulated 2D scans ({args.grid} x {args.grid} grid, 10 frames) per batch, {args.runs} run(s) per "
        f"recon worker count, median of the runs; database: {connection.vendor}; {os.cpu_count()} cores, shared "
        f"with whatever else runs on this machine (load average, 1 min: {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after)"
    )
    first = counts[0]
    header = f"{'':<38}" + "".join(f"{f'{n} recon worker' + ('s' if n > 1 else ''):>18}" for n in counts)
    header += "".join(f"{f'ratio {n}/{first}':>12}" for n in counts[1:])
    print(header)

    def row(label: str, values: dict[int, float], fmt: str) -> None:
        line = f"{label:<38}" + "".join(f"{values[n]:>18{fmt}}" for n in counts)
        line += "".join(f"{values[n] / values[first] if values[first] else float('nan'):>12.2f}" for n in counts[1:])
        print(line)

    rates = {n: statistics.median(60 * len(r["ids"]) / r["elapsed"] for r in rs) for n, rs in results.items()}
    row("scans/min", rates, ".1f")
    row("batch time s", {n: statistics.median(r["elapsed"] for r in rs) for n, rs in results.items()}, ".1f")
    for label, *_ in STAGES:
        row(f"{label} s (median)", {n: statistics.median(r[label] for r in rs) for n, rs in results.items()}, ".2f")
    row(
        "queued to metrics s (p95)",
        {n: statistics.median(r["p95 queued to metrics"] for r in rs) for n, rs in results.items()},
        ".2f",
    )
    for label in ("worker CPU s per scan", "recon CPU s per scan"):
        row(label, {n: statistics.median(r[label] for r in rs) for n, rs in results.items()}, ".2f")
    each = {n: ", ".join(f"{60 * len(r['ids']) / r['elapsed']:.1f}" for r in rs) for n, rs in results.items()}
    splits = {n: ", ".join("/".join(str(s) for s in r["split"]) for r in rs) for n, rs in results.items()}
    for n in counts:
        print(f"{n} recon worker(s): scans/min per run {each[n]}; reconstructions per recon worker per run {splits[n]}")
    scans = sum(len(r["ids"]) for rs in results.values() for r in rs)
    if problems:
        print(f"FAILED: {len(problems)} problem(s):")
        for problem in problems[:50]:
            print(f"  {problem}")
        return 1
    print(
        f"checked: all {scans} scans quantified, each with exactly one reconstruction, one set of metrics "
        f"({setup['regions']} measurements of that reconstruction), one RECONSTRUCTION_COMPLETED and one "
        "METRICS_RECORDED event"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20, help="scans per batch (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="batches per recon worker count; the median is reported")
    parser.add_argument("--recon-workers", default="1,2", help="comma-separated recon worker counts (default 1,2)")
    parser.add_argument(
        "--postgres", metavar="URL", default=DEFAULT_SERVER, help="the server to create the database on"
    )
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    parser.add_argument(
        "--grid",
        type=int,
        default=DEFAULT_GRID,
        help="side of the 2D grid (default 12, the demo's): longer reconstructions",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds one batch may take (default 900)")
    args = parser.parse_args()
    try:
        args.recon_workers = [int(c) for c in args.recon_workers.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--recon-workers {args.recon_workers!r}: give whole numbers, e.g. 1,2")
    if not args.recon_workers or min(args.recon_workers) < 1 or args.scans < 1 or args.runs < 1:
        parser.error("--recon-workers, --scans and --runs must be positive")
    if not 4 <= args.grid <= 64:
        parser.error("--grid: between 4 and 64")
    if not Path(args.redis_server).is_file():
        parser.error(f"no redis-server at {args.redis_server} (Debian package redis-server)")

    # The project root first: this folder holds live.py, which must not shadow the live app.
    sys.path.insert(0, str(ROOT))
    from benchmarks.verify_audit import throwaway_database

    # A SIGTERM unwinds like an interrupt: the workers stopped, redis-server stopped, the database dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tmp = Path(tempfile.mkdtemp(prefix="mpi-bench-pipeline-"))
    redis_server = RedisServer(args.redis_server, tmp)
    status = 1
    try:
        with throwaway_database(args.postgres, str(tmp)) as url:
            status = run(args, url, redis_server.url, tmp)
    finally:
        redis_server.stop()
        if status == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (the workers' logs) for a look", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
