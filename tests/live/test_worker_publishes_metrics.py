"""The live worker turns recorded frames into one metrics event per foreground frame (in
frame order, with the contract's fields), LiveMetric rows, images, health and the end."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from live.models import LiveAlert, LiveMetric, LiveSession
from live.worker import FINISHED, PREPARING, EngineUnavailable, LiveWorker
from tests.imaging.factories import ScanFactory
from tests.live.conftest import events_of, publish

METRICS_FIELDS = {
    "type",
    "frame",
    "acquired_at",
    "published_at",
    "rois",
    "target_percent_of_injected",
    "off_target_percent",
}


def test_metrics_per_foreground_frame_in_order_then_ended(live, transport, engines):
    t0 = time.time() - 1.0
    # 30 frames in 3 blocks; frames 0-4 are background frames; heart 100,000 ng, liver 5 ng (< LOD), lungs 25,000 ng
    rows = np.tile([100_000.0, 5.0, 25_000.0], (30, 1))
    background = np.arange(30) < 5
    acquired = np.concatenate(
        [
            publish(transport, live.session, k, rows[k : k + 10], background=background[k : k + 10], t0=t0)
            for k in (0, 10, 20)
        ]
    )
    scan = ScanFactory(subject=live.subject, injection=live.injection)
    LiveSession.objects.filter(pk=live.session.pk).update(status="ended", scan=scan)
    transport.publish_control(live.session.pk, "end", {"scan": scan.pk})

    before = time.time()
    status = LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run()
    after = time.time()

    assert status == "ended"
    metrics = events_of(transport, live.session, "metrics")
    assert [m["frame"] for m in metrics] == list(range(5, 30))
    for m in metrics:
        assert set(m) >= METRICS_FIELDS
        assert m["acquired_at"] == pytest.approx(acquired[m["frame"]])
        assert before <= m["published_at"] <= after
        assert m["rois"] == {
            "heart": {
                "kind": "target",
                "iron_ng": 100_000.0,
                "uncertainty_ng": pytest.approx(10_001.0),
                "detection_limit_ng": 10.0,
            },
            "lungs": {
                "kind": "lungs",
                "iron_ng": 25_000.0,
                "uncertainty_ng": pytest.approx(2_501.0),
                "detection_limit_ng": 10.0,
            },
            "liver": {
                "kind": "liver",
                "iron_ng": 5.0,
                "uncertainty_ng": pytest.approx(1.5),
                "detection_limit_ng": 10.0,
            },
        }
        assert m["target_percent_of_injected"] == pytest.approx(100_000 / 125_000 * 100)
        assert m["dose_basis"] == "whole dose"  # no dose rate assumed: a percent of the whole dose
        # liver (5 ng) is below its detection limit (10 ng): not in the detected total
        assert m["off_target_percent"] == pytest.approx(25_000 / 125_000 * 100)
    ended = events_of(transport, live.session)[-1]
    assert ended == {"type": "ended", "scan": scan.pk, "status": "ended"}

    stored = list(LiveMetric.objects.filter(session=live.session).order_by("frame"))
    assert [r.frame for r in stored] == list(range(5, 30))
    assert stored[0].rois == metrics[0]["rois"]
    assert stored[-1].published_at == metrics[-1]["published_at"]
    assert stored[-1].off_target_percent == pytest.approx(20.0)
    session = LiveSession.objects.get(pk=live.session.pk)
    assert session.frames_processed == 30
    assert session.worker_id == FINISHED
    assert session.engine_state is not None
    assert session.lag_ms is not None
    assert transport.read_frames(live.session.pk, block_ms=0) == []  # everything acknowledged


def test_images_and_health(live, transport, engines):
    t0 = time.time() - 1.0
    publish(transport, live.session, 0, np.tile([50_000.0, 0.0, 0.0], (12, 1)), t0=t0)
    transport.publish_control(live.session.pk, "abort", {"reason": "operator stopped"})
    LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run()

    health = events_of(transport, live.session, "health")
    assert health, "at least one health event"
    assert set(health[0]) >= {"type", "frames_received", "frames_dropped", "frames_recorded", "lag_ms"}
    assert health[0]["frames_received"] == 12 and health[0]["frames_recorded"] == 12
    images = events_of(transport, live.session, "image")
    assert images
    image = images[-1]
    assert image["shape"] == [6, 5, 3]
    mip = np.frombuffer(base64.b64decode(image["mip_z"]), dtype="<f4").reshape(image["mip_shape"])
    assert mip.shape == (6, 5)
    assert mip[2, 3] == pytest.approx(50_000.0)
    assert image["max_ng"] == pytest.approx(50_000.0)
    assert events_of(transport, live.session)[-1] == {"type": "ended", "scan": None, "status": "aborted"}


def test_images_at_five_per_second_and_dropped_when_behind(live, transport, engines):
    """Blocks of 0.2 s of frames arriving on time: one image per block (>= 5/s). A backlog
    (many blocks waiting at once): images skipped, the frames in no image counted."""
    now = {"t": time.time()}
    worker = LiveWorker(live.session.pk, transport, engine_factory=engines.factory, clock=lambda: now["t"])
    t0 = now["t"]
    block = 9  # ~0.19 s of frames
    for k in range(10):
        acquired = publish(transport, live.session, k * block, np.tile([1000.0, 0.0, 0.0], (block, 1)), t0=t0)
        now["t"] = float(acquired[-1]) + 0.02
        worker.run(max_blocks=1)
    images = events_of(transport, live.session, "image")
    assert len(images) == 10  # one per 0.19 s block: > 5 per second of stream
    assert LiveSession.objects.get(pk=live.session.pk).frames_dropped == 0
    # backlog: 6 blocks waiting, processed in one read; only the last gets an image (16 frames of 54)
    for k in range(10, 16):
        publish(transport, live.session, k * block, np.tile([1000.0, 0.0, 0.0], (block, 1)), t0=t0)
    now["t"] = t0 + 16 * block * 0.0215 + 0.02
    worker.run(max_blocks=6)
    assert len(events_of(transport, live.session, "image")) == 11
    assert LiveSession.objects.get(pk=live.session.pk).frames_dropped == 6 * block - 16
    assert [m["frame"] for m in events_of(transport, live.session, "metrics")] == list(range(16 * block))


@pytest.mark.parametrize("code", ["engine_unavailable", "system_matrix_mismatch"])
def test_without_an_engine_the_stream_is_still_followed_to_its_end(live, transport, code):
    def refuse(*args, **kwargs):
        raise EngineUnavailable("the calibration's dividers [102, 96] differ from the stream's [34, 32]", code)

    publish(transport, live.session, 0, np.tile([50_000.0, 0.0, 0.0], (12, 1)), t0=time.time())
    transport.publish_control(live.session.pk, "end", {"scan": None})
    assert LiveWorker(live.session.pk, transport, engine_factory=refuse).run() == "ended"
    assert events_of(transport, live.session, "metrics") == []
    preparing, health = events_of(transport, live.session, "health")[:2]
    assert preparing["monitoring"] == PREPARING  # said before the build, then why it failed
    assert health["monitoring"].startswith("live monitoring unavailable: the calibration's dividers")
    assert LiveSession.objects.get(pk=live.session.pk).frames_processed == 12
    alerts = list(LiveAlert.objects.filter(session=live.session).values_list("kind", flat=True))
    assert alerts == (["system_matrix_mismatch"] if code == "system_matrix_mismatch" else [])


def test_a_checkpoint_of_another_engine_restarts_the_background(live, transport, engines):
    LiveSession.objects.filter(pk=live.session.pk).update(frames_processed=5, engine_state=b"not a state")
    publish(transport, live.session, 0, np.tile([50_000.0, 0.0, 0.0], (10, 1)), t0=time.time())
    transport.publish_control(live.session.pk, "end", {"scan": None})

    def factory(*args, **kwargs):
        engine = engines.factory(*args, **kwargs)
        engine.restore = lambda state: (_ for _ in ()).throw(ValueError("not a live engine state"))
        return engine

    assert LiveWorker(live.session.pk, transport, engine_factory=factory).run() == "ended"
    assert [m["frame"] for m in events_of(transport, live.session, "metrics")] == list(range(5, 10))
    notes = events_of(transport, live.session, "health")[0]["notes"]
    assert any("background estimate restarted at frame 5" in n for n in notes)
