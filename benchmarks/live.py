"""Live injection monitoring through the real path: bridge -> server -> live worker -> subscriber.

    .venv/bin/python benchmarks/live.py                 # a 2D and a 3D (37^3) stream, 60 s each
    .venv/bin/python benchmarks/live.py --dims 2 --seconds 20
    .venv/bin/python benchmarks/live.py --dims 2 --browser /usr/bin/chromium
    .venv/bin/python benchmarks/live.py --dims 3 --viewers 0,20    # 0 and 20 viewers side by side (issue #16)
    .venv/bin/python benchmarks/live.py --dims 3 --viewers 20 --slices   # the viewers also fetch a slice per image

For each stream:

1. A throwaway platform in a temporary folder (SQLite, local storage), the demo trial
   loaded, and ``load_demo_live`` preparing a simulated injection stream (part of the cells
   go to the lungs) with its calibration registered for a streaming scanner. The 3D stream
   is a 37^3 grid whose live operator keeps ``LIVE_MAX_ROWS`` (2,000) rows. Streams and
   operators are kept between runs (``--streams``, ``--operator-cache``): the first run of
   a size builds the operator (about a minute at 37^3 on 2 cores); later runs load it, as a
   scanner's second session would. The live session is opened and, as at a site, the stream
   starts once the session says its live engine is ready (``engine`` in the session's API;
   the page shows it): the time it took is printed. ``--stream-at-once`` starts the stream
   without waiting (the engine is then built while the first frames arrive; the
   latencies include that catch-up, printed as "caught up after").
2. The platform served by one ASGI process (uvicorn; the embedded transport: the live
   worker is a thread of that process), or ``--shape production``: gunicorn for the API,
   uvicorn for the event streams and a separate ``live_worker`` process, over Redis Streams
   (needs ``--redis URL``).
3. One measuring event subscriber (Server-Sent Events) and ``--viewers`` more (each a
   viewer's event stream: a list such as ``0,20`` runs the stream once per count, side by
   side) connect, then ``python -m bridge replay`` streams the file at the acquisition rate
   (46.4 frames/s: 21.5 ms frames).

Printed, against the targets of issue #15 (the baseline: the scanner's own frame rate and
the 1 s latency budget): sustained frames/s, latency from ``acquired_at`` to the metrics
event reaching the subscriber (p50 / p95 / max), frames recorded vs sent, CPU seconds per
frame (server, worker and bridge processes together), and the time from the true
off-target threshold crossing (from the simulator's ground truth) to the alert's arrival.
Medians over ``--repeats`` runs where repeated. This machine is shared (2 cores): run it
quiet, and read the CPU per frame beside the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
PASSWORD = "trial-demo-2026"
ACQUISITION_FPS = 46.4
LATENCY_BUDGET_S = 1.0
LATENCY_GOAL_S = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all threads (/proc/<pid>/stat 14, 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def browser_cpu_seconds() -> float:
    """CPU seconds so far of every Chromium process started by this benchmark (the browser,
    its renderer, GPU and utility processes): descendants of this process running Chromium."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    mine, total = {os.getpid()}, 0.0
    for _ in range(8):  # the process tree is a few levels deep (playwright's driver, the browser, its children)
        mine |= {pid for pid, parent in parents.items() if parent in mine}
    for pid in mine - {os.getpid()}:
        try:
            exe = os.path.realpath(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "chrom" in Path(exe).name:
            total += cpu_seconds(pid)
    return total


def manage(env, *args, capture=True) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=capture, text=True
    )
    return done.stdout if capture else ""


def shell(env, code: str) -> str:
    return manage(env, "shell", "-c", code).strip().splitlines()[-1]


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class Subscriber(threading.Thread):
    """One viewer: reads the session's event stream and stamps each event on arrival."""

    def __init__(self, url: str, token: str, slice_url: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.events: list[tuple[float, dict]] = []
        self.bytes = 0
        self.connected = threading.Event()
        self.error: str | None = None
        # As the live page with a slice chosen: after each image event, that slice (one request at a time).
        self.slice_url = slice_url
        self.image_seen = threading.Event()
        self.slices: list[float] = []  # seconds per slice request
        if slice_url:
            threading.Thread(target=self._slices, daemon=True).start()

    def _slices(self) -> None:
        url = self.slice_url
        assert url is not None  # started only with one
        with requests.Session() as http:
            http.headers["Authorization"] = f"Token {self.token}"
            while True:
                self.image_seen.wait()
                self.image_seen.clear()
                started = time.perf_counter()
                try:
                    answer = http.get(url, timeout=30)
                except requests.RequestException:
                    continue
                if answer.status_code == 200:
                    self.slices.append(time.perf_counter() - started)
                    self.bytes += len(answer.content)

    def run(self) -> None:
        try:
            with requests.get(
                self.url, headers={"Authorization": f"Token {self.token}"}, stream=True, timeout=(5, 120)
            ) as answer:
                answer.raise_for_status()
                self.connected.set()
                data: list[str] = []
                for raw in answer.iter_lines(decode_unicode=True):
                    now = time.time()
                    self.bytes += len(raw) + 1
                    if raw is None:
                        continue
                    if raw == "":
                        if data:
                            event = json.loads("\n".join(data))
                            self.events.append((now, event))
                            data = []
                            if event.get("type") == "image" and self.slice_url:
                                self.image_seen.set()
                            if event.get("type") == "ended":
                                return
                        continue
                    if raw.startswith("data:"):
                        data.append(raw[5:].lstrip())
        except Exception as exc:  # noqa: BLE001 - the benchmark reports what stopped the viewer
            self.error = f"{type(exc).__name__}: {exc}"
            self.connected.set()


class BrowserViewer(threading.Thread):
    """The live page open in headless Chromium (Playwright) for the whole stream, as a
    clinician would have it: the figures are measured with it drawing."""

    def __init__(self, base: str, session: int, chromium: str) -> None:
        super().__init__(daemon=True)
        self.base, self.session, self.chromium = base, session, chromium
        self.ready, self.stop = threading.Event(), threading.Event()
        self.page_errors: list[str] = []
        self.error: str | None = None
        self.cpu_s: float | None = None
        self.browser_cpu_s: float | None = None

    def run(self) -> None:
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=self.chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
                )
                page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
                page.on("pageerror", lambda e: self.page_errors.append(str(e)))
                page.goto(f"{self.base}/accounts/login/")
                page.fill("#id_username", "investigator_a")
                page.fill("#id_password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(f"{self.base}/")
                page.goto(f"{self.base}/live/{self.session}/")
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                browser_before = browser_cpu_seconds()
                self.ready.set()
                self.stop.wait(600)
                metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                self.cpu_s = metrics.get("TaskDuration")
                self.browser_cpu_s = browser_cpu_seconds() - browser_before
                browser.close()
        except Exception as exc:  # noqa: BLE001 - the benchmark reports what stopped the page
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()


def true_crossing_frame(truth: dict, threshold_percent: float) -> int | None:
    """The first frame whose true off-target share of the detected total exceeds the threshold."""
    kinds = truth["kinds"]
    for n, row in enumerate(truth["iron_ng"]):
        if truth["is_background"][n]:
            continue
        total = sum(row)
        off = sum(v for v, k in zip(row, kinds, strict=True) if k != "target")
        if total > 0 and 100.0 * off / total > threshold_percent:
            return n
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def run_stream(args, dims: int, extra_viewers: int = 0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"live-bench-{dims}d-"))
    env = {**os.environ, "MPI_VAR_DIR": str(tmp / "var"), "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    if args.shape == "production":
        env.update({"CELERY_BROKER_URL": args.redis, "LIVE_TRANSPORT": "redis", "LIVE_REDIS_URL": args.redis})
    else:
        env.pop("CELERY_BROKER_URL", None)
        env["LIVE_TRANSPORT"] = "memory"
    env["LIVE_MAX_ROWS"] = str(args.rows)
    if args.operator_cache:
        env["LIVE_OPERATOR_CACHE_DIR"] = args.operator_cache
    processes: list[subprocess.Popen] = []
    try:
        t0 = time.perf_counter()
        manage(env, "migrate", "--verbosity", "0")
        manage(env, "load_demo")
        frames = max(10, round(args.seconds * ACQUISITION_FPS))
        grid = args.grid if dims == 3 else 12
        out = manage(
            env,
            "load_demo_live",
            "--dims",
            str(dims),
            "--grid",
            str(grid),
            "--frames",
            str(frames),
            "--output",
            str(Path(args.streams) / f"{dims}d-{grid}-{frames}"),
            "--json",
        )
        demo = json.loads(out.strip().splitlines()[-1])
        setup_s = time.perf_counter() - t0
        token = shell(
            env,
            "from compliance.tokens import token_issue, scoped_token_issue;"
            "from django.contrib.auth import get_user_model;"
            "u=get_user_model().objects.get(username='imaging_a');"
            "print(token_issue(user=u, name='live benchmark').key + ' ' + "
            "scoped_token_issue(actor=u, user=u, name='live bridge', scope='scanner', expires_in_days=1).key)",
        )
        full_token, scanner_token = token.split()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if args.shape == "production":
            events_port = free_port()
            processes.append(
                _start(
                    env,
                    tmp / "web.log",
                    [
                        PYTHON,
                        "-m",
                        "gunicorn",
                        "config.wsgi",
                        "--bind",
                        f"127.0.0.1:{port}",
                        "--workers",
                        "2",
                        "--threads",
                        "4",
                        "--timeout",
                        "120",
                    ],
                )
            )
            processes.append(
                _start(
                    env,
                    tmp / "events.log",
                    [
                        PYTHON,
                        "-m",
                        "uvicorn",
                        "config.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(events_port),
                        "--no-access-log",
                    ],
                )
            )
            processes.append(_start(env, tmp / "worker.log", [PYTHON, "manage.py", "live_worker"]))
            events_base = f"http://127.0.0.1:{events_port}"
        else:
            processes.append(
                _start(
                    env,
                    tmp / "web.log",
                    [
                        PYTHON,
                        "-m",
                        "uvicorn",
                        "config.asgi:application",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--no-access-log",
                    ],
                )
            )
            events_base = base
        wait_for(f"{base}/accounts/login/")
        if events_base != base:
            wait_for(f"{events_base}/accounts/login/")
        auth = {"Authorization": f"Token {full_token}"}
        created = requests.post(
            f"{base}/api/v1/live-sessions/",
            json={"injection": demo["injection"], "system_matrix": demo["system_matrix"]},
            headers=auth,
            timeout=30,
        )
        created.raise_for_status()
        session = created.json()["id"]
        # As at a site: the page says when the live engine is ready (the calibration's operator
        # and the subject's regions prepared), and the injection starts then. --stream-at-once
        # streams at once instead (the engine is then built while the first frames arrive).
        engine_s, engine = None, created.json().get("engine")
        if not args.stream_at_once:
            t_engine = time.perf_counter()
            while engine not in ("ready", "unavailable") and time.perf_counter() - t_engine < 900:
                time.sleep(0.5)
                engine = requests.get(f"{base}/api/v1/live-sessions/{session}/", headers=auth, timeout=30).json()[
                    "engine"
                ]
            engine_s = time.perf_counter() - t_engine
            if engine != "ready":
                raise RuntimeError(f"the live engine is {engine} after {engine_s:.0f} s")
        viewers = [
            Subscriber(
                f"{events_base}/api/v1/live-sessions/{session}/events/",
                full_token,
                f"{base}/api/v1/live-sessions/{session}/slice/?plane=z" if args.slices and n else None,
            )
            for n in range(1 + extra_viewers)
        ]
        for viewer in viewers:
            viewer.start()
        for viewer in viewers:
            viewer.connected.wait(30)
        page = BrowserViewer(base, session, args.browser) if args.browser else None
        if page is not None:
            page.start()
            page.ready.wait(60)
        import resource

        cpu_before = sum(cpu_seconds(p.pid) for p in processes)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        bridge = subprocess.run(
            [
                PYTHON,
                "-m",
                "bridge",
                "replay",
                demo["stream"],
                "--url",
                base,
                "--token",
                scanner_token,
                "--session",
                str(session),
                "--speed",
                f"{args.speed:g}",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if bridge.returncode != 0:
            raise RuntimeError(f"bridge exited {bridge.returncode}: {bridge.stderr[-2000:]}")
        summary = json.loads(bridge.stdout.strip().splitlines()[-1])
        for viewer in viewers:
            viewer.join(timeout=120)
        if page is not None:
            page.stop.set()
            page.join(timeout=60)
        cpu_after = sum(cpu_seconds(p.pid) for p in processes)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        bridge_cpu = (children_after.ru_utime - children_before.ru_utime) + (
            children_after.ru_stime - children_before.ru_stime
        )
        detail = requests.get(f"{base}/api/v1/live-sessions/{session}/", headers=auth, timeout=30).json()
        truth = json.loads(Path(demo["truth"]).read_text())
        first = viewers[0]
        metrics = [(arrived, e) for arrived, e in first.events if e.get("type") == "metrics"]
        latencies = [arrived - e["acquired_at"] for arrived, e in metrics]
        alerts = [
            (arrived, e)
            for arrived, e in first.events
            if e.get("type") == "alert" and e.get("kind") == "off_target_share"
        ]
        alert_delay = None
        crossing = None
        if alerts:
            crossing = true_crossing_frame(truth, alerts[0][1]["threshold_percent"])
            acquired = {e["frame"]: e["acquired_at"] for _, e in metrics}
            if crossing is not None and crossing in acquired:
                # From the moment the frame that truly crosses the threshold was complete.
                alert_delay = alerts[0][0] - acquired[crossing]
        stream_s = summary["duration_s"]
        # Steady state: from the first frame whose result arrived within the budget (a worker
        # that loads its operator when the stream starts catches up first).
        first_in_budget = next((i for i, v in enumerate(latencies) if v <= LATENCY_BUDGET_S), None)
        steady = latencies[first_in_budget:] if first_in_budget is not None else []
        catch_up_s = (
            metrics[first_in_budget][1]["acquired_at"] - metrics[0][1]["acquired_at"]
            if first_in_budget is not None and metrics
            else None
        )
        all_latencies = [
            arrived - e["acquired_at"] for v in viewers for arrived, e in v.events if e.get("type") == "metrics"
        ]
        return {
            "dims": dims,
            "grid": grid,
            "viewers": extra_viewers,
            "setup_s": setup_s,
            "engine_s": engine_s,
            "frames_sent": summary["frames_sent"],
            "frames_recorded": detail["frames_recorded"],
            "frames_dropped": detail.get("frames_dropped"),
            "metrics_events": len(metrics),
            "stream_s": stream_s,
            "fps": summary["frames_sent"] / stream_s,
            "p50_ms": 1000 * percentile(latencies, 50),
            "p95_ms": 1000 * percentile(latencies, 95),
            "max_ms": 1000 * max(latencies) if latencies else float("nan"),
            "p95_all_viewers_ms": 1000 * percentile(all_latencies, 95),
            "catch_up_s": catch_up_s,
            "steady_p50_ms": 1000 * percentile(steady, 50),
            "steady_p95_ms": 1000 * percentile(steady, 95),
            "steady_max_ms": 1000 * max(steady) if steady else float("nan"),
            "cpu_ms_per_frame": 1000 * ((cpu_after - cpu_before) + bridge_cpu) / max(summary["frames_sent"], 1),
            "alert_delay_s": alert_delay,
            "alert_frame": alerts[0][1]["frame"] if alerts else None,
            "true_crossing_frame": crossing,
            "viewer_bytes_per_s": statistics.mean(v.bytes for v in viewers) / stream_s,
            "slices_per_s": sum(len(v.slices) for v in viewers) / stream_s,
            "slice_p95_ms": 1000 * percentile([t for v in viewers for t in v.slices], 95),
            "viewer_errors": [v.error for v in viewers if v.error]
            + ([page.error] if page is not None and page.error else [])
            + (page.page_errors if page is not None else []),
            "page_main_thread_s_per_s": page.cpu_s / stream_s if page is not None and page.cpu_s else None,
            "browser_cpu_s_per_s": (
                page.browser_cpu_s / stream_s if page is not None and page.browser_cpu_s is not None else None
            ),
            "status": detail["status"],
            "scan": detail.get("scan"),
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


def _start(env, log_path: Path, command: list[str]) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _column(result: dict) -> str:
    return f"{result['dims']}D {result['grid']}^{result['dims']} +{result['viewers']}v"


def format_report(results: list[dict], args) -> str:
    lines = [
        "Live monitoring through bridge -> server -> live worker -> 1 measuring subscriber "
        f"+ {args.viewers} viewer(s) (columns: +Nv), "
        f"shape {args.shape}, replay speed {args.speed:g}",
        f"{'':<34}" + "".join(f"{_column(r):>16}" for r in results) + f"{'target':>22}",
    ]

    def row(label, key, fmt, target=""):
        cells = "".join(f"{'-' if r.get(key) is None else format(r[key], fmt):>16}" for r in results)
        lines.append(f"{label:<34}{cells}{target:>22}")

    row("frames sent", "frames_sent", "d")
    row("frames recorded", "frames_recorded", "d", "= sent (0 lost)")
    row("sustained frames/s", "fps", ".1f", f">= {ACQUISITION_FPS} (scanner)")
    lines.append(
        f"{'  ratio to the scanner rate':<34}"
        + "".join(f"{r['fps'] / (ACQUISITION_FPS * args.speed):>16.2f}" for r in results)
        + f"{'>= 1.00':>22}"
    )
    row("latency p50 (ms)", "p50_ms", ".0f")
    row("latency p95 (ms)", "p95_ms", ".0f", "< 1000 (goal 250)")
    lines.append(
        f"{'  p95 / budget':<34}"
        + "".join(f"{r['p95_ms'] / (1000 * LATENCY_BUDGET_S):>16.2f}" for r in results)
        + f"{'< 1.00':>22}"
    )
    row("latency max (ms)", "max_ms", ".0f")
    row("latency p95, all viewers (ms)", "p95_all_viewers_ms", ".0f")
    row("caught up after (s of stream)", "catch_up_s", ".1f", "(operator load)")
    row("  then latency p50 (ms)", "steady_p50_ms", ".0f")
    row("  then latency p95 (ms)", "steady_p95_ms", ".0f", "< 1000 (goal 250)")
    row("  then latency max (ms)", "steady_max_ms", ".0f")
    row("display frames dropped", "frames_dropped", "d")
    row("CPU per frame (ms, all processes)", "cpu_ms_per_frame", ".2f", f"< {1000 / ACQUISITION_FPS:.1f} x 2 cores")
    row("true threshold crossing (frame)", "true_crossing_frame", "d")
    row("alert raised at frame", "alert_frame", "d")
    row("crossing -> alert arrival (s)", "alert_delay_s", ".2f")
    row("event bytes/s per viewer", "viewer_bytes_per_s", ".0f")
    if args.slices:
        row("slice requests/s (all viewers)", "slices_per_s", ".1f", "(--slices)")
        row("slice answer p95 (ms)", "slice_p95_ms", ".0f")
    row("live page main thread (s per s)", "page_main_thread_s_per_s", ".3f", "(--browser)")
    row("browser, all processes (s per s)", "browser_cpu_s_per_s", ".3f", "(--browser)")
    row("engine ready before stream (s)", "engine_s", ".1f", "(not with --stream-at-once)")
    row("set-up (s)", "setup_s", ".0f")
    for r in results:
        if r["viewer_errors"]:
            lines.append(f"{_column(r)} viewer errors: {r['viewer_errors']}")
        lines.append(f"{_column(r)} session ended as {r['status']}, recorded scan {r['scan']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="2,3", help="streams to run: 2, 3 or 2,3 (default)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stream length at speed 1 (default 60)")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--grid", type=int, default=37, help="3D grid edge (default 37)")
    parser.add_argument("--rows", type=int, default=2000, help="rows of the live operator (default 2000)")
    parser.add_argument(
        "--viewers",
        default="0",
        help="event streams open besides the measuring subscriber: a count or a list (0,20: a run for each)",
    )
    parser.add_argument(
        "--browser",
        default="",
        help="Chromium to keep the live page open in during the stream (e.g. /usr/bin/chromium)",
    )
    parser.add_argument(
        "--slices",
        action="store_true",
        help="the extra viewers also ask for a slice after each image (the live page with a slice chosen, 3D)",
    )
    parser.add_argument("--shape", choices=["embedded", "production"], default="embedded")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="Redis for --shape production")
    parser.add_argument(
        "--operator-cache",
        default=str(ROOT / "var" / "live-bench-operators"),
        help="operator cache kept between runs (the 37^3 operator takes minutes to build)",
    )
    parser.add_argument(
        "--streams",
        default=str(ROOT / "var" / "live-bench-streams"),
        help="simulated streams kept between runs: the same calibration file, so the operator cache holds",
    )
    parser.add_argument(
        "--stream-at-once",
        action="store_true",
        help="start the stream right after opening the session, without waiting for the live engine",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary platform folders")
    args = parser.parse_args(argv)
    try:
        dims = [int(v) for v in args.dims.split(",")]
    except ValueError:
        parser.error("--dims takes 2, 3 or 2,3")
    try:
        counts = [int(v) for v in str(args.viewers).split(",")]
    except ValueError:
        parser.error("--viewers takes a count or a list of counts (0,20)")
    if any(d not in (2, 3) for d in dims) or args.seconds <= 0 or min(counts) < 0 or args.speed <= 0:
        parser.error("--dims 2|3, --seconds > 0, --viewers >= 0, --speed > 0")
    results = [run_stream(args, d, n) for d in dims for n in counts]
    print(format_report(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
