"""Upload throughput, web-process memory and time to metrics, on the embedded default.

    .venv/bin/python benchmarks/upload.py --size-mb 2048

1. A throwaway platform in a temporary folder (SQLite, filesystem broker, media),
   the demo trial loaded, gunicorn serving it on a free loopback port.
2. A file of ``--size-mb`` random bytes is uploaded through the tus API in
   ``--chunk-mb`` PATCHes (each with its sha256 Upload-Checksum; bodies sent with
   sendfile), and compared with a plain file copy on the same disk, fsynced (ratio
   printed; target >= 0.5). This disk is shared and its speed swings 2-5x between runs,
   so copy and upload alternate over ``--rounds`` rounds (each round changes the file's
   last bytes, so no upload is a duplicate of the one before, and deletes both results,
   so each round starts with the same free memory) and the ratio is taken per round; the
   median is the figure. The client's pass over the file before creation (whole-file sha256, which tus
   creation needs, plus the per-chunk checksums, on two threads) is timed on its own
   line; the ratio is of creation + PATCHes, and the line below it includes the pass.
3. The web worker's CPU time per GiB uploaded (what bounds the upload on a fast disk), and
   its peak memory growth during the upload, from /proc/<pid>/status
   (VmHWM at the end minus VmRSS before; target < 200 MB).
4. A Celery worker is started beside the server, a simulated 2D scan is uploaded and
   the time from the last PATCH to the scan's metrics is measured.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PASSWORD = "trial-demo-2026"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far, all threads (/proc/<pid>/stat 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def manage(env, *args, capture=False):
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=capture, text=True
    )


def setup_django_token(env) -> str:
    code = (
        "from compliance.tokens import token_issue;"
        "from django.contrib.auth import get_user_model;"
        "u=get_user_model().objects.get(username='imaging_a');"
        "print(token_issue(user=u, name='upload benchmark').key)"
    )
    return manage(env, "shell", "-c", code, capture=True).stdout.strip().splitlines()[-1]


def ids(env) -> dict:
    code = (
        "from imaging.models import Scanner;from trials.models import Injection;"
        "i=Injection.objects.select_related('subject').filter(subject__site__code='A').order_by('id').first();"
        "s=Scanner.objects.get(site=i.subject.site);"
        "print(i.subject_id, i.pk, s.pk)"
    )
    subject, injection, scanner = manage(env, "shell", "-c", code, capture=True).stdout.split()[-3:]
    return {"subject": subject, "injection": injection, "scanner": scanner}


def metadata(values: dict) -> str:
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in values.items())


def client_prepass(path: Path, chunk: int) -> tuple[str, list[str]]:
    """One read of the file before creation: the whole-file sha256 (tus creation needs it in
    Upload-Metadata, so every client has it before the first byte is sent) and, in the same
    pass, each chunk's Upload-Checksum, on a second thread (hashlib releases the GIL). Hashing
    a chunk inside the PATCH loop left the server idle for ~40 ms per 64 MiB: that is client
    scheduling, not server throughput. The pass is timed and printed on its own line."""
    whole = hashlib.sha256()
    with open(path, "rb") as fh, ThreadPoolExecutor(1) as pool:
        futures = []
        while block := fh.read(chunk):
            futures.append(pool.submit(lambda b: base64.b64encode(hashlib.sha256(b).digest()).decode(), block))
            whole.update(block)
        checksums = [f.result() for f in futures]
    return whole.hexdigest(), checksums


def fsynced_copy(source: Path, target: Path) -> float:
    """Seconds for a plain copy, written to disk as the upload's chunks are."""
    os.sync()
    started = time.perf_counter()
    shutil.copyfile(source, target)
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())  # the upload fsyncs each chunk: so does the baseline
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def change_tail(path: Path, round_no: int) -> None:
    """A new sha256 for the next round (the server refuses a file it already has)."""
    with open(path, "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(round_no.to_bytes(8, "little"))


def tus_upload(
    base: str, token: str, path: Path, meta: dict, chunk: int, client_cpu: list[float] | None = None
) -> tuple[float, float, dict]:
    """(client pre-pass seconds, creation + PATCHes seconds, headers of the last PATCH's answer).

    The PATCH bodies go from the file to the socket with sendfile(2) on one keep-alive
    connection, as an efficient client sends them: a client that reads each 64 MiB chunk
    into a fresh bytes object spends a core of this 2-core machine on copies and page
    faults, and the server, sharing the machine, is measured slower for it."""
    headers = {"Authorization": f"Token {token}", "Tus-Resumable": "1.0.0"}
    size = path.stat().st_size
    started = time.perf_counter()
    sha256, checksums = client_prepass(path, chunk)
    prepass_s = time.perf_counter() - started
    started, cpu_started = time.perf_counter(), os.times()
    created = requests.post(
        f"{base}/api/v1/uploads/",
        headers=headers
        | {"Upload-Length": str(size), "Upload-Metadata": metadata(meta | {"sha256": sha256, "filename": path.name})},
        timeout=60,
    )
    created.raise_for_status()
    url = urlsplit(created.headers["Location"])
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    offset, answer = 0, {}
    with open(path, "rb") as fh, contextlib.closing(connection):
        while offset < size:
            length = min(chunk, size - offset)
            # Chunks start at multiples of `chunk` (the server acknowledges whole chunks), so the
            # pre-computed checksum applies; a partial acknowledgement would need a fresh one.
            if offset % chunk == 0:
                checksum = checksums[offset // chunk]
            else:
                checksum = base64.b64encode(hashlib.sha256(os.pread(fh.fileno(), length, offset)).digest()).decode()
            connection.putrequest("PATCH", url.path, skip_accept_encoding=True)
            for name, value in (
                headers
                | {
                    "Upload-Offset": str(offset),
                    "Content-Length": str(length),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Checksum": f"sha256 {checksum}",
                }
            ).items():
                connection.putheader(name, value)
            connection.endheaders()
            sent = 0
            while sent < length:
                sent += os.sendfile(connection.sock.fileno(), fh.fileno(), offset + sent, length - sent)
            response = connection.getresponse()
            body = response.read()
            if response.status != 204:
                raise RuntimeError(f"PATCH at {offset}: {response.status} {body[:300]!r}")
            answer = dict(response.getheaders())
            offset = int(answer["Upload-Offset"])
    if client_cpu is not None:  # this process's CPU for creation + PATCHes (it shares the machine)
        cpu_ended = os.times()
        client_cpu[0] += cpu_ended.user - cpu_started.user + cpu_ended.system - cpu_started.system
    return prepass_s, time.perf_counter() - started, answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--chunk-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="copy/upload pairs; the median ratio is reported")
    parser.add_argument("--dir", default=None, help="working folder (default: a temporary folder under /tmp)")
    parser.add_argument(
        "--no-metrics", action="store_true", help="skip step 4 (a Celery worker and the time from upload to metrics)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mpi-upload-bench-", dir=args.dir))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT")}
    env |= {"MPI_VAR_DIR": str(work / "var"), "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false"}
    server = worker = None
    try:
        manage(env, "migrate", "-v0")
        manage(env, "load_demo", capture=True)
        manage(env, "load_demo_scans", capture=True)  # scanners and system matrices (scans wait for a worker)
        token = setup_django_token(env)
        target = ids(env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "2",
                "--timeout",
                "600",
            ],
            cwd=ROOT,
            env=env,
            stdout=open(work / "web.log", "wb"),  # noqa: SIM115 - open while the server runs
            stderr=subprocess.STDOUT,
        )
        for _ in range(100):
            try:
                requests.get(f"{base}/api/v1/", timeout=1)
                break
            except requests.RequestException:  # a cold worker may accept and answer after the timeout
                time.sleep(0.2)
        web_pid = children(server.pid)[0]

        size = args.size_mb * 1024 * 1024
        data_path = work / "payload.bin"
        with open(data_path, "wb") as fh:
            remaining = size
            while remaining:
                n = min(remaining, 64 << 20)
                fh.write(os.urandom(n))
                remaining -= n
        rounds, web_user_s, web_system_s, client_cpu = [], 0.0, 0.0, [0.0]
        rss_before = proc_kib(web_pid, "VmRSS")
        for round_no in range(args.rounds):
            change_tail(data_path, round_no)
            copy_s = fsynced_copy(data_path, work / "copy.bin")
            os.sync()
            cpu_before = cpu_seconds(web_pid)
            prepass_s, upload_s, _ = tus_upload(
                base, token, data_path, target | {"hours": 1 + round_no}, args.chunk_mb << 20, client_cpu
            )
            cpu_after = cpu_seconds(web_pid)
            web_user_s += cpu_after[0] - cpu_before[0]
            web_system_s += cpu_after[1] - cpu_before[1]
            rounds.append((copy_s, prepass_s, upload_s))
            for scan_file in (work / "var" / "media" / "imaging" / "scans").glob("*/*/original.mdf"):
                scan_file.unlink()  # as the copy's file is: each round starts with the same free memory
        peak_growth_mb = (proc_kib(web_pid, "VmHWM") - rss_before) / 1024
        data_path.unlink()

        mib = args.size_mb
        print(
            f"file size                 {mib} MiB, {args.chunk_mb} MiB PATCHes, {args.rounds} rounds "
            "(copy, then upload)"
        )
        print("round   copy MiB/s  upload MiB/s  ratio   client pre-pass  ratio incl. pre-pass")
        for i, (copy_s, prepass_s, upload_s) in enumerate(rounds, 1):
            print(
                f"{i:5d}   {mib / copy_s:10.1f}  {mib / upload_s:12.1f}  {copy_s / upload_s:5.2f}   "
                f"{prepass_s:13.2f} s  {copy_s / (prepass_s + upload_s):20.2f}"
            )
        median = statistics.median
        print(f"plain copy (same disk)    {median(mib / c for c, _, _ in rounds):8.1f} MiB/s median (fsynced)")
        print(
            f"tus upload (loopback)     {median(mib / u for _, _, u in rounds):8.1f} MiB/s median (creation + "
            "PATCHes; server checksums, fsyncs)"
        )
        print(
            f"ratio upload/copy         {median(c / u for c, _, u in rounds):8.2f}   median of rounds (target >= 0.5)"
        )
        print(f"  incl. client pre-pass   {median(c / (p + u) for c, p, u in rounds):8.2f}   median of rounds")
        gib = args.rounds * mib / 1024
        print(
            f"web process CPU           {(web_user_s + web_system_s) / gib:8.2f} s per GiB uploaded (user "
            f"{web_user_s / gib:.2f} + system {web_system_s / gib:.2f}, all threads)"
        )
        print(
            f"client CPU                {client_cpu[0] / gib:8.2f} s per GiB sent (creation + PATCHes, "
            f"sendfile; on the same {os.cpu_count()} cores)"
        )
        print(f"web peak memory growth    {peak_growth_mb:8.1f} MiB (VmHWM - VmRSS before; target < 200)")
        print(f"web peak memory           {proc_kib(web_pid, 'VmHWM') / 1024:8.1f} MiB (VmHWM of the worker process)")
        if args.no_metrics:
            return 0

        # Time from upload complete to metrics, with the embedded worker beside the server.
        worker = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "ingest,recon,export",
                "-P",
                "solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=open(work / "worker.log", "wb"),  # noqa: SIM115 - open while the worker runs
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)  # let the worker drain the demo scans queued at load time first
        sys.path.insert(0, str(ROOT))
        from recon.simulate import simulate_to_files

        sim = simulate_to_files(work / "sim", dims=2, grid=(12, 12, 1), fast=True, frames=10, seed=7)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # wait for the demo backlog, so the timing is of one scan
            pending = session.get(f"{base}/api/v1/scans/", params={"page_size": 500}).json()["results"]
            if all(s["status"] in ("quantified", "rejected", "failed") for s in pending):
                break
            time.sleep(0.5)
        _, _, last = tus_upload(base, token, Path(sim["measurement"]), target | {"hours": 96}, 1 << 20)
        done_at = time.perf_counter()
        scan_url = f"{base}/api/v1/scans/{last['Scan-Id']}/"
        while True:
            scan = session.get(scan_url).json()
            if scan["status"] in ("quantified", "rejected", "failed") or time.perf_counter() - done_at > 600:
                break
            time.sleep(0.1)
        print(
            f"upload complete->metrics  {time.perf_counter() - done_at:8.2f} s  (2D 12x12 scan, status "
            f"{scan['status']}, embedded worker, filesystem broker)"
        )
        return 0
    finally:
        for process in (worker, server):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
