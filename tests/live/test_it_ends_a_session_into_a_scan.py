"""POST /live-sessions/{id}/end/ and /abort/. End: every frame sent must be recorded
(else frames_missing with next_frame); the recording becomes a scan of the injection with
the file's SHA-256, queued for the offline pipeline exactly like an upload, and the
pipeline quantifies it; the audit trail's chained digests are recomputable from the
file. Abort: with a reason; the recording is kept, no scan."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
from celery.app.task import Task
from django.conf import settings
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Scan
from live.models import LiveSession
from tests.imaging.helpers import process
from tests.live.stream import URL, frames_body, post_frames, send, started

pytestmark = pytest.mark.usefixtures("memory_feed")


@pytest.fixture
def queued(monkeypatch):
    """Every task queued: (name, args)."""
    tasks = []
    monkeypatch.setattr(
        Task,
        "apply_async",
        lambda self, args=None, kwargs=None, **options: tasks.append((self.name, tuple(args or ()))),
    )
    return tasks


def _events(action, sid):
    return list(AuditEvent.objects.filter(action=action, object_id=str(sid)).order_by("sequence"))


def test_missing_frames_are_refused_with_the_next_frame(api, pipeline, stream):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    send(client, sid, stream, 0, 10)
    response = client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "frames_missing" and response.json()["next_frame"] == 10
    row = LiveSession.objects.get()
    assert row.status == "streaming" and row.scan is None and not Scan.objects.exists()


def test_the_recording_becomes_a_queued_scan_that_the_pipeline_quantifies(
    api, pipeline, stream, memory_feed, queued, django_capture_on_commit_callbacks
):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    start = timezone.now().timestamp()
    times = [start + 0.02 * i for i in range(stream.count)]
    assert send(client, sid, stream, 0, stream.count, times).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    scan = Scan.objects.get()
    assert body["status"] == "ended" and body["scan"] == scan.pk and body["ended_at"]
    row = LiveSession.objects.get()
    path = settings.MEDIA_ROOT / row.recording
    assert scan.file == row.recording and scan.filename == f"live-{sid}.mdf"
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and scan.size_bytes == path.stat().st_size
    assert (scan.injection, scan.subject, scan.scanner, scan.upload) == (
        pipeline.injection,
        pipeline.subject,
        pipeline.scanner,
        None,
    )
    expected_hours = (times[0] - pipeline.injection.administered_at.timestamp()) / 3600
    assert scan.hours_after_injection == pytest.approx(expected_hours, abs=1e-9)
    assert queued == [("imaging.validate_scan", (scan.pk,))]  # as an upload's scan
    ended = _events(AuditAction.LIVE_SESSION_ENDED, sid)
    assert len(ended) == 1 and ended[0].changes["scan"] == [None, scan.pk]
    assert [b.kind for b in memory_feed.get().read_frames(sid, block_ms=0)] == ["frames", "end"]
    # Ending again changes nothing.
    again = client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    assert again.status_code == 200 and again.json()["scan"] == scan.pk
    assert Scan.objects.count() == 1 and len(queued) == 1
    # The offline pipeline takes the recording like any uploaded scan.
    scan = process(scan)
    assert scan.status == "quantified", scan.status_reason
    assert scan.system_matrix == pipeline.system_matrix and scan.measurements.exists()


def test_the_chained_digests_are_recomputable_from_the_file(api, pipeline, stream):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    # 600 frames (the simulated scan, over and over): chunks 0-255, 256-511, 512-599.
    reps = -(-600 // stream.count)
    frames = np.tile(stream.frames, (reps, 1, 1, 1))[:600]
    flags = np.tile(stream.background, reps)[:600]
    times = [1.7e9 + 0.02 * i for i in range(600)]
    for (first, stop), chunks in (((0, 500), 1), ((500, 600), 2)):  # whole chunks of 256 only
        response = post_frames(
            client, sid, frames_body(first, frames[first:stop], flags[first:stop], times[first:stop])
        )
        assert response.status_code == 200, response.content
        assert len(_events(AuditAction.LIVE_FRAMES_RECORDED, sid)) == chunks
    assert client.post(f"{URL}{sid}/end/", {"frames_sent": 600}, format="json").status_code == 200
    events = _events(AuditAction.LIVE_FRAMES_RECORDED, sid)
    assert [(e.changes["first_frame"][1], e.changes["last_frame"][1]) for e in events] == [
        (0, 255),
        (256, 511),
        (512, 599),
    ]
    row = LiveSession.objects.get()
    with h5py.File(settings.MEDIA_ROOT / row.recording, "r") as h5:
        data = h5["/measurement/data"]
        chain = ""
        for event in events:
            first, last = event.changes["first_frame"][1], event.changes["last_frame"][1]
            digest = hashlib.sha256(np.ascontiguousarray(data[first : last + 1]).astype("<f4").tobytes()).hexdigest()
            chain = hashlib.sha256(f"{chain}{digest}".encode()).hexdigest()
            assert event.changes["sha256"][1] == digest and event.changes["chain"][1] == chain
    assert row.recording_chain == chain and _events(AuditAction.LIVE_SESSION_ENDED, sid)[0].changes["chain"][1] == chain


def test_an_aborted_session_keeps_its_recording_and_makes_no_scan(api, pipeline, stream, memory_feed):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    send(client, sid, stream, 0, 4)
    short = client.post(f"{URL}{sid}/abort/", {"reason": "x"}, format="json")
    assert short.status_code == 400 and short.json()["error"]["code"] == "reason_insufficient"
    response = client.post(f"{URL}{sid}/abort/", {"reason": "injection stopped by the investigator"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "aborted" and body["status_reason"] == "injection stopped by the investigator"
    assert body["scan"] is None and not Scan.objects.exists()
    row = LiveSession.objects.get()
    with h5py.File(settings.MEDIA_ROOT / row.recording, "r") as h5:
        assert h5["/measurement/data"].shape[0] == 4
    assert len(_events(AuditAction.LIVE_SESSION_ABORTED, sid)) == 1
    assert [b.kind for b in memory_feed.get().read_frames(sid, block_ms=0)] == ["frames", "abort"]
    for refused in (
        send(client, sid, stream, 4, 6),
        client.post(f"{URL}{sid}/end/", {"frames_sent": 4}, format="json"),
        client.post(f"{URL}{sid}/start/", stream.header, format="json"),
    ):
        assert refused.status_code == 409
    # Aborting again changes nothing.
    assert client.post(f"{URL}{sid}/abort/", {"reason": "pressed the button twice"}, format="json").status_code == 200
    assert len(_events(AuditAction.LIVE_SESSION_ABORTED, sid)) == 1


def test_an_ended_session_cannot_be_aborted(api, pipeline, stream):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    send(client, sid, stream, 0, stream.count)
    client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    response = client.post(f"{URL}{sid}/abort/", {"reason": "too late to abort this one"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "session_ended"
    assert LiveSession.objects.get().status == "ended"
