"""The whole live path in one process: the bridge's calls (create, start, frames in
blocks, end) through the API, the in-memory transport, the live worker with the real
engine, and a viewer's event stream: one metrics event per foreground frame, in order,
then `ended` with the recorded scan."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.utils import timezone

from live.models import LiveMetric, LiveSession
from live.worker import FINISHED, LiveWorker
from tests.live.stream import URL, send, started

pytestmark = pytest.mark.usefixtures("memory_feed")


def test_bridge_to_viewer(api, pipeline, stream, memory_feed, settings, tmp_path):
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    start = timezone.now().timestamp()
    times = [start + 0.02 * i for i in range(stream.count)]
    for first in range(0, stream.count, 4):
        stop = min(first + 4, stream.count)
        assert send(client, sid, stream, first, stop, times[first:stop]).status_code == 200
    response = client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    assert response.status_code == 200, response.content
    scan = response.json()["scan"]
    assert memory_feed.workers and set(memory_feed.workers) == {sid}  # the ingest path asked for the worker

    assert LiveWorker(sid, memory_feed.get()).run() == "ended"

    viewer = client.get(f"{URL}{sid}/events/")
    assert viewer.status_code == 200
    events = [
        json.loads(line[6:])
        for line in b"".join(viewer.streaming_content).decode().split("\n")
        if line.startswith("data: ")
    ]
    foreground = np.flatnonzero(~stream.background).tolist()
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [m["frame"] for m in metrics] == foreground
    assert [m["acquired_at"] for m in metrics] == pytest.approx([times[i] for i in foreground])
    kinds = {name: roi["kind"] for name, roi in metrics[0]["rois"].items()}
    assert sorted(kinds.values()) == sorted(r.kind for r in pipeline.subject.regions_of_interest.all())
    assert all(m["target_percent_of_injected"] is not None for m in metrics)
    assert events[-1] == {"type": "ended", "scan": scan, "status": "ended"}
    assert LiveMetric.objects.filter(session_id=sid).count() == len(foreground)
    session = LiveSession.objects.get(pk=sid)
    assert session.frames_processed == stream.count and session.worker_id == FINISHED
