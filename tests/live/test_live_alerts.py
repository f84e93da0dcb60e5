"""Live alerts: an off-target accumulation sustained over N blocks raises one alert (row,
audit event, alert event) with its value and the trial's threshold; a clean injection,
a transient, or off-target iron below its detection limit raises none."""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from live.models import LiveAlert, LiveMark
from live.worker import LiveWorker
from tests.live.conftest import FRAME_S, events_of, publish
from trials.models import Injection

BLOCK = 9  # frames per block (~0.2 s)
ALERT_FIELDS = {
    "type",
    "id",
    "kind",
    "frame",
    "acquired_at",
    "created_at",
    "value_percent",
    "threshold_percent",
    "message",
}


def stream(live, transport, engines, per_block: list[list[float]], *, end: bool = True, clock=None):
    """One block per row of ``per_block`` (heart, liver, lungs iron, ng), then end."""
    t0 = time.time()  # frames 'acquired' as they are processed: no lag
    for k, row in enumerate(per_block):
        publish(transport, live.session, k * BLOCK, np.tile(row, (BLOCK, 1)), t0=t0)
    if end:
        transport.publish_control(live.session.pk, "end", {"scan": None})
    kwargs = {"clock": clock} if clock else {}
    LiveWorker(live.session.pk, transport, engine_factory=engines.factory, **kwargs).run(
        max_blocks=None if end else len(per_block)
    )
    return t0


def test_lung_accumulation_raises_one_alert_after_sustained_blocks(live, transport, engines):
    clean, lungs = [100_000.0, 0.0, 0.0], [100_000.0, 0.0, 40_000.0]
    t0 = stream(live, transport, engines, [clean] * 3 + [lungs] * 6)

    share = LiveAlert.objects.get(session=live.session, kind="off_target_share")
    # blocks 3, 4, 5 above the threshold: the alert at the last frame of block 5
    assert share.frame == 6 * BLOCK - 1
    assert share.acquired_at == pytest.approx(t0 + share.frame * FRAME_S)
    assert share.value_percent == pytest.approx(40_000 / 140_000 * 100)
    assert share.threshold_percent == pytest.approx(20.0)  # the trial's off_target_alert_percent
    assert "20 %" in share.message
    detected = LiveAlert.objects.get(session=live.session, kind="off_target_detected")
    assert detected.frame == 6 * BLOCK - 1
    assert detected.value_percent == pytest.approx(40_000 / 125_000 * 100)
    assert LiveAlert.objects.filter(session=live.session).count() == 2  # one per kind, not one per block

    audit = AuditEvent.objects.get(action=AuditAction.LIVE_ALERT_RAISED, object_id=str(share.pk))
    assert audit.object_type == "live.livealert"
    assert audit.subject_id == live.subject.pk
    events = {e["kind"]: e for e in events_of(transport, live.session, "alert")}
    assert set(events) == {"off_target_share", "off_target_detected"}
    assert set(events["off_target_share"]) == ALERT_FIELDS
    assert events["off_target_share"]["id"] == share.pk
    assert events["off_target_share"]["created_at"] == share.created_at.timestamp()  # shown on the site's clock
    assert events["off_target_share"]["frame"] == share.frame
    assert events["off_target_share"]["value_percent"] == pytest.approx(share.value_percent)
    assert events["off_target_share"]["threshold_percent"] == 20.0
    # the alert event comes after the metrics of the frame that completed the condition
    order = [
        (e["type"], e.get("frame")) for e in events_of(transport, live.session) if e["type"] in ("metrics", "alert")
    ]
    assert order.index(("alert", share.frame)) > order.index(("metrics", share.frame))


def test_clean_injection_raises_nothing(live, transport, engines):
    stream(live, transport, engines, [[120_000.0, 1.0, 2.0]] * 10)
    assert not LiveAlert.objects.filter(session=live.session).exists()
    assert not events_of(transport, live.session, "alert")
    assert not AuditEvent.objects.filter(action=AuditAction.LIVE_ALERT_RAISED).exists()


def test_off_target_below_detection_limit_raises_nothing(live, transport, engines):
    """Lungs 3 ng are 100 % of what the frames show, but below the detection limit of the
    block mean (10 ng / sqrt(9)): no alert."""
    stream(live, transport, engines, [[0.0, 0.0, 3.0]] * 10, end=False)
    assert not LiveAlert.objects.filter(session=live.session).exists()


def test_a_transient_shorter_than_the_sustain_raises_nothing(live, transport, engines, settings):
    settings.LIVE_ALERT_SUSTAIN_BLOCKS = 3
    clean, lungs = [100_000.0, 0.0, 0.0], [100_000.0, 0.0, 40_000.0]
    stream(live, transport, engines, [clean, lungs, lungs, clean, lungs, lungs, clean])
    assert not LiveAlert.objects.filter(session=live.session).exists()


def test_target_low_at_the_end_only(live, transport, engines):
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 5)
    alert = LiveAlert.objects.get(session=live.session)
    assert alert.kind == "target_low"
    assert alert.frame == 5 * BLOCK - 1
    assert alert.value_percent == pytest.approx(24.0)
    assert alert.threshold_percent == pytest.approx(50.0)
    # raised when the end came: after the last metrics event, before `ended`
    kinds = [e["type"] for e in events_of(transport, live.session)]
    assert kinds.index("alert") > max(i for i, k in enumerate(kinds) if k == "metrics")
    assert kinds[-1] == "ended"


def test_target_low_during_the_stream_once_the_injection_should_be_complete(live, transport, engines, settings):
    settings.LIVE_INJECTION_EXPECTED_S = 0.0
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 5, end=False)
    alert = LiveAlert.objects.get(session=live.session, kind="target_low")
    assert alert.frame == 3 * BLOCK - 1


def test_target_low_waits_for_the_injections_own_planned_duration(live, transport, engines, settings):
    """The injection's record gives the planned duration: the platform default (0 here: due at
    once) does not apply, so nothing is checked during a stream shorter than the plan."""
    settings.LIVE_INJECTION_EXPECTED_S = 0.0
    Injection.objects.filter(pk=live.injection.pk).update(planned_duration_s=Decimal("600"))
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 5, end=False)
    assert not LiveAlert.objects.filter(session=live.session, kind="target_low").exists()


def test_target_low_is_checked_at_once_after_a_bolus_whatever_the_default(live, transport, engines, settings):
    settings.LIVE_INJECTION_EXPECTED_S = 600.0
    Injection.objects.filter(pk=live.injection.pk).update(planned_duration_s=Decimal("0"))
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 5, end=False)
    alert = LiveAlert.objects.get(session=live.session, kind="target_low")
    assert alert.frame == 3 * BLOCK - 1


def test_target_low_waits_until_the_injection_has_run_its_planned_time_from_its_start_mark(
    live, transport, engines, settings, imaging_a
):
    """With marks, "should be complete" is the dose so far's: the planned time of running
    injection after the start mark (the demo: started 4 s into the stream, planned 17 s), not
    the planned time after the stream's first frame."""
    settings.LIVE_INJECTION_EXPECTED_S = 4 * BLOCK * FRAME_S  # planned: 4 blocks of running injection
    LiveMark.objects.create(
        session=live.session, kind="injection_start", frame=2 * BLOCK, at=timezone.now(), created_by=imaging_a
    )
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 10, end=False)
    alert = LiveAlert.objects.get(session=live.session, kind="target_low")
    # complete at the last frame of block 5 (frames 2B..6B-1 running); sustained over blocks 5, 6, 7
    assert alert.frame == 8 * BLOCK - 1


def test_target_low_is_not_checked_while_the_marked_injection_has_not_started(
    live, transport, engines, settings, imaging_a
):
    settings.LIVE_INJECTION_EXPECTED_S = 0.0  # a bolus: due at once, but only from its start mark
    LiveMark.objects.create(
        session=live.session, kind="injection_start", frame=20 * BLOCK, at=timezone.now(), created_by=imaging_a
    )
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 6, end=False)
    assert not LiveAlert.objects.filter(session=live.session, kind="target_low").exists()


def test_target_low_is_due_at_the_stop_mark(live, transport, engines, settings, imaging_a):
    settings.LIVE_INJECTION_EXPECTED_S = 600.0  # planned far longer than the stream
    for kind, frame in (("injection_start", 0), ("injection_stop", 2 * BLOCK)):
        LiveMark.objects.create(session=live.session, kind=kind, frame=frame, at=timezone.now(), created_by=imaging_a)
    stream(live, transport, engines, [[30_000.0, 0.0, 0.0]] * 6, end=False)
    alert = LiveAlert.objects.get(session=live.session, kind="target_low")
    assert alert.frame == 5 * BLOCK - 1  # blocks 2, 3, 4 after the stop


def test_frame_gap_and_lag_are_technical_alerts(live, transport, engines, settings):
    t0 = time.time() - 10
    row = [100_000.0, 0.0, 0.0]
    publish(transport, live.session, 0, np.tile(row, (BLOCK, 1)), t0=t0)
    # frame 9 acquired 0.5 s after frame 8 (> 3 frame durations)
    publish(transport, live.session, BLOCK, np.tile(row, (BLOCK, 1)), t0=t0 + 0.5)
    for k in range(2, 6):
        publish(transport, live.session, k * BLOCK, np.tile(row, (BLOCK, 1)), t0=t0 + 0.5)
    # the results come 5 s after acquisition: over the 1,000 ms budget in every block
    LiveWorker(
        live.session.pk, transport, engine_factory=engines.factory, clock=lambda: t0 + 0.5 + 6 * BLOCK * FRAME_S + 5
    ).run(max_blocks=6)
    gap = LiveAlert.objects.get(session=live.session, kind="frame_gap")
    assert gap.frame == BLOCK
    assert "ms after the frame before it" in gap.message
    lag = LiveAlert.objects.get(session=live.session, kind="lag")
    assert lag.frame == 3 * BLOCK - 1
    assert "budget of 1000 ms" in lag.message


def test_frames_missing_from_the_stream_are_a_frame_gap(live, transport, engines):
    t0 = time.time()
    publish(transport, live.session, 0, np.tile([100_000.0, 0.0, 0.0], (BLOCK, 1)), t0=t0)
    publish(transport, live.session, 2 * BLOCK, np.tile([100_000.0, 0.0, 0.0], (BLOCK, 1)), t0=t0)
    LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run(max_blocks=2)
    gap = LiveAlert.objects.get(session=live.session, kind="frame_gap")
    assert gap.frame == 2 * BLOCK
    assert gap.message.startswith(f"Frames {BLOCK}-{2 * BLOCK - 1} ({BLOCK}) never reached the live monitor")


def test_a_sustained_condition_raises_once_per_episode_not_again_after_acknowledgement():
    """The rule reports the moment a condition has held for ``sustain`` blocks; while it
    lasts (acknowledged or not) it says nothing more; once cleared and back, it reports again."""
    from live.monitoring import AlertRules, Regions

    rules = AlertRules(
        regions=Regions(("heart", "lungs"), ("target", "lungs")),
        threshold_percent=20.0,
        injected_ng=None,
        frame_duration_s=FRAME_S,
        sustain=3,
    )
    clean, lungs = [100_000.0, 0.0], [100_000.0, 40_000.0]
    lod = np.array([10.0, 10.0])
    kinds_per_block = []
    for k, row in enumerate([clean] * 2 + [lungs] * 8 + [clean] * 2 + [lungs] * 3):
        frames = np.arange(k * BLOCK, (k + 1) * BLOCK)
        found = rules.block(
            frames=frames, acquired_at=frames * FRAME_S, iron=np.tile(row, (BLOCK, 1)), lod=lod, lag_ms=None
        )
        kinds_per_block.append(sorted(f.kind for f in found))
    raised = {k: kinds for k, kinds in enumerate(kinds_per_block) if kinds}
    # blocks 2..9 high: raised at block 4 only; cleared at 10-11; high again 12..14: raised at 14
    assert raised == {4: ["off_target_detected", "off_target_share"], 14: ["off_target_detected", "off_target_share"]}
