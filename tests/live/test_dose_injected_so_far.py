"""The dose injected so far (``live.dose``): the marks and the planned duration give the
denominator of "% of the dose injected so far"; the worker publishes it with each frame."""

from __future__ import annotations

import time
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest
from django.utils import timezone

from live.dose import BASIS_SO_FAR, BASIS_WHOLE, FROM_DEFAULT, FROM_RECORD, dose_so_far, planned_duration
from live.models import LiveMark, LiveSession
from live.worker import LiveWorker
from tests.live.conftest import FRAME_S, events_of, publish
from trials.models import Injection

D = 125_000.0


def so_far(marks, frame, *, fd=0.1, expected=10.0, whole=D):
    return dose_so_far(marks, frame, whole_ng=whole, frame_duration_s=fd, expected_s=expected)


def test_not_known_before_the_start_mark_or_without_one():
    assert so_far([], 50).ng is None
    assert so_far([], 50).basis == BASIS_WHOLE
    marks = [("injection_start", 20)]
    assert so_far(marks, 19).ng is None
    assert so_far(marks, 19).state == "not started"
    assert so_far(marks, 20).state == "running"


def test_planned_rate_while_running_paused_time_excluded_and_capped_at_the_whole_dose():
    # 0.1 s frames, planned 10 s: 1 % of the dose per frame while running
    marks = [("injection_start", 10), ("injection_pause", 30), ("injection_resume", 50)]
    assert so_far(marks, 19).ng == pytest.approx(D * 10 * 0.01)  # frames 10-19 ran
    assert so_far(marks, 40).ng == pytest.approx(D * 20 * 0.01)  # paused at 30: frames 10-29
    assert so_far(marks, 40).state == "paused"
    assert so_far(marks, 59).ng == pytest.approx(D * 30 * 0.01)  # 20 + frames 50-59
    assert so_far(marks, 500).ng == pytest.approx(D)  # past the planned duration: the whole dose
    assert so_far(marks, 59).basis == BASIS_SO_FAR


def test_the_stop_mark_means_the_whole_dose_and_a_bolus_is_given_at_the_start():
    marks = [("injection_start", 10), ("injection_stop", 15)]
    assert so_far(marks, 14).ng == pytest.approx(D * 5 * 0.01)
    assert so_far(marks, 15).ng == pytest.approx(D)
    assert so_far(marks, 15).state == "stopped"
    assert so_far([("injection_start", None)], 0, expected=0.0).ng == pytest.approx(D)  # before the stream: frame 0


def test_percent_of_the_dose_so_far_and_not_shown_under_the_minimum_fraction():
    marks = [("injection_start", 0)]
    assert so_far(marks, 3).percent(100.0) is None  # 4 % given: too little to divide by
    dose = so_far(marks, 49)  # 50 % of the dose given
    assert dose.percent(D * 0.25) == pytest.approx(50.0)
    assert so_far(marks, 49, fd=None).ng is None  # no frame duration: not known
    assert so_far(marks, 49, whole=None).percent(10.0) is None


def test_the_worker_publishes_the_dose_so_far_with_each_frame(live, transport, engines, imaging_a, settings):
    settings.LIVE_INJECTION_EXPECTED_S = 100 * FRAME_S  # the planned duration: 100 frames
    LiveMark.objects.create(
        session=live.session, kind="injection_start", frame=10, at=timezone.now(), created_by=imaging_a
    )
    rows = np.tile([50_000.0, 5.0, 25_000.0], (60, 1))
    publish(transport, live.session, 0, rows[:30], t0=time.time() - 2.0)
    LiveMark.objects.create(
        session=live.session, kind="injection_pause", frame=40, at=timezone.now(), created_by=imaging_a
    )
    publish(transport, live.session, 30, rows[30:], t0=time.time() - 2.0)
    LiveSession.objects.filter(pk=live.session.pk).update(status="ended")
    transport.publish_control(live.session.pk, "end", {"scan": None})

    LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run()

    by_frame = {m["frame"]: m for m in events_of(transport, live.session, "metrics")}
    assert by_frame[5]["dose_so_far_ng"] is None
    assert by_frame[5]["injection_state"] == "not started"
    assert by_frame[5]["target_percent_of_dose_so_far"] is None
    # the whole-dose figure is unchanged (its meaning documented): 50,000 / 125,000
    assert by_frame[29]["target_percent_of_injected"] == pytest.approx(40.0)
    assert by_frame[29]["dose_basis"] == "whole dose"
    assert by_frame[29]["dose_ng"] == pytest.approx(D)
    # frames 10-29 ran: 20 % of the dose given, the target's 50,000 ng is 200 % of it
    assert by_frame[29]["dose_so_far_ng"] == pytest.approx(0.2 * D)
    assert by_frame[29]["target_percent_of_dose_so_far"] == pytest.approx(200.0)
    assert by_frame[55]["injection_state"] == "paused"
    assert by_frame[55]["dose_so_far_ng"] == pytest.approx(0.3 * D)  # frames 10-39


def test_the_planned_duration_is_the_injections_own_else_the_platform_default(settings):
    settings.LIVE_INJECTION_EXPECTED_S = 600.0
    own = planned_duration(SimpleNamespace(planned_duration_s=Decimal("17.234")))
    assert (own.seconds, own.source, own.from_record) == (pytest.approx(17.234), FROM_RECORD, True)
    bolus = planned_duration(SimpleNamespace(planned_duration_s=Decimal("0")))
    assert (bolus.seconds, bolus.source) == (0.0, FROM_RECORD)  # 0 is a bolus, not "not given"
    default = planned_duration(SimpleNamespace(planned_duration_s=None))
    assert (default.seconds, default.source, default.from_record) == (600.0, FROM_DEFAULT, False)


def _run_with_start_at_frame_10(live, transport, engines, imaging_a):
    LiveMark.objects.create(
        session=live.session, kind="injection_start", frame=10, at=timezone.now(), created_by=imaging_a
    )
    publish(transport, live.session, 0, np.tile([50_000.0, 5.0, 25_000.0], (40, 1)), t0=time.time() - 2.0)
    LiveSession.objects.filter(pk=live.session.pk).update(status="ended")
    transport.publish_control(live.session.pk, "end", {"scan": None})
    LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run()
    return {m["frame"]: m for m in events_of(transport, live.session, "metrics")}


def test_the_injections_planned_duration_overrides_the_platform_default(live, transport, engines, imaging_a, settings):
    settings.LIVE_INJECTION_EXPECTED_S = 100 * FRAME_S  # the default: 100 frames; not this injection's
    Injection.objects.filter(pk=live.injection.pk).update(planned_duration_s=Decimal(str(round(50 * FRAME_S, 3))))

    by_frame = _run_with_start_at_frame_10(live, transport, engines, imaging_a)

    # frames 10-29 ran: 20 of the record's 50 frames, 40 % of the dose (the default would say 20 %)
    assert by_frame[29]["dose_so_far_ng"] == pytest.approx(0.4 * D, rel=1e-3)
    assert by_frame[29]["target_percent_of_dose_so_far"] == pytest.approx(100.0, rel=1e-3)
    assert by_frame[39]["dose_so_far_ng"] == pytest.approx(0.6 * D, rel=1e-3)


def test_without_a_planned_duration_on_the_record_the_platform_default_applies(
    live, transport, engines, imaging_a, settings
):
    settings.LIVE_INJECTION_EXPECTED_S = 100 * FRAME_S
    assert Injection.objects.get(pk=live.injection.pk).planned_duration_s is None

    by_frame = _run_with_start_at_frame_10(live, transport, engines, imaging_a)

    assert by_frame[29]["dose_so_far_ng"] == pytest.approx(0.2 * D)
