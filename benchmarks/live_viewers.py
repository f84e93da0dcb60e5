"""Benchmark (not a test): what N viewers of one live session cost the server on the ASGI path.

    .venv/bin/python benchmarks/live_viewers.py [--viewers 0,1,20] [--seconds 10]

One process, the in-memory transport, the events a 3D session publishes (a metrics event per
frame at 46.4 frames/s, an image event, a 37 x 37 float32 maximum-intensity projection in
base64, every 9th frame) read by N event streams (``live.events.async_stream``), against the
baseline it replaced: each viewer polling the transport every 50 ms in the thread pool and
encoding every event itself (the loop of ``async_stream`` before ``live.fanout``, kept here
verbatim but its idle database check). Printed per row: the process's CPU seconds per second
(the publisher included: the 0-viewer row), and the delay from an event's publication to its
arrival at a viewer (p50, p95). The end-to-end figures with a real bridge, server, worker
and viewers are ``benchmarks/live.py --viewers 0,20``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

import numpy as np  # noqa: E402

from live import events as live_events  # noqa: E402
from live.events import RETRY_MS, sse  # noqa: E402
from live.transport import MemoryTransport  # noqa: E402

FPS = 46.4


async def polling_stream(session_id, after, transport):
    """The per-viewer loop before live.fanout (c92a11b), but its idle database check."""
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        events = await asyncio.to_thread(transport.read_events, session_id, after, block_ms=0)
        for event_id, event in events:
            after = event_id
            yield sse(event_id, event)
            if event.get("type") == "ended":
                return
        if not events:
            await asyncio.sleep(0.05)


def metrics(frame):
    rois = {
        n: {"kind": k, "iron_ng": 1234.5 + frame, "uncertainty_ng": 12.3, "detection_limit_ng": 0.7}
        for n, k in [("heart", "target"), ("lung_left", "lungs"), ("lung_right", "lungs"), ("liver", "liver")]
    }
    return {
        "type": "metrics",
        "frame": frame,
        "acquired_at": time.time(),
        "published_at": time.time(),
        "rois": rois,
        "target_percent_of_injected": 33.3,
        "dose_basis": "whole dose",
        "dose_ng": 615000.0,
        "injection_state": "running",
        "dose_so_far_ng": None,
        "target_percent_of_dose_so_far": None,
        "off_target_percent": 21.0,
        "provisional": True,
    }


MIP = base64.b64encode(np.random.default_rng(0).random((37, 37), dtype=np.float32).tobytes()).decode()


def run(kind, viewers, seconds=10.0):
    transport = MemoryTransport()
    sid = 1
    latencies = []

    async def viewer():
        gen = (
            polling_stream(sid, None, transport)
            if kind == "polling"
            else live_events.async_stream(sid, None, transport=transport)
        )
        async for chunk in gen:
            now = time.time()
            for line in chunk.split("\n"):
                if line.startswith("data: ") and '"metrics"' in line[:30]:
                    latencies.append(now - json.loads(line[6:])["published_at"])
            if '"ended"' in chunk:
                return

    def publisher(loop):
        t0 = time.time()
        frame = 0
        while time.time() - t0 < seconds:
            transport.publish_event(sid, metrics(frame))
            if frame % 9 == 0:
                transport.publish_event(
                    sid, {"type": "image", "frame": frame, "shape": [37, 37], "data": MIP, "max_ng": 1.0}
                )
            frame += 1
            time.sleep(max(0.0, t0 + frame / FPS - time.time()))
        transport.publish_event(sid, {"type": "ended", "scan": None})

    async def main():
        tasks = [asyncio.create_task(viewer()) for _ in range(viewers)]
        await asyncio.sleep(0.05)
        cpu0 = time.process_time()
        pub = threading.Thread(target=publisher, args=(asyncio.get_running_loop(),))
        pub.start()
        await asyncio.gather(*tasks) if tasks else await asyncio.to_thread(pub.join)
        pub.join()
        return time.process_time() - cpu0

    cpu = asyncio.run(main())
    lat = sorted(latencies)

    def p(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * (len(lat) - 1)))] if lat else float("nan")

    return cpu / seconds, p(0.5), p(0.95)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="0,1,20", help="viewer counts (default 0,1,20)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    live_events.FINISHED_CHECK_S = 3600.0  # no database in this benchmark
    print(f"{'':<24}{'CPU s per s':>12}{'p50 ms':>9}{'p95 ms':>9}")
    for kind in ("polling", "fanout"):
        for n in (int(v) for v in args.viewers.split(",")):
            cpu, p50, p95 = run(kind, n, args.seconds)
            print(f"{kind + ', ' + str(n) + ' viewers':<24}{cpu:>12.3f}{p50:>9.1f}{p95:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
