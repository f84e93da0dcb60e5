"""The ended session's record draws "% of the dose injected so far" as the live page did:
the dose so far at each stored frame from the session's marks and the planned duration
(``live.dose``), and the page says which basis its percentages use."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from imaging.selectors import injected_iron_ng
from live.models import LiveMark, LiveSession
from tests.web.test_live_pages import FRAME_S, _config, ended, live_site  # noqa: F401 - fixtures
from trials.models import Injection
from web import live_data


def test_the_record_has_the_dose_so_far_at_each_frame_from_the_marks(ended, imaging_a, settings):  # noqa: F811
    settings.LIVE_INJECTION_EXPECTED_S = 100 * FRAME_S  # planned: 100 frames at a constant rate
    LiveSession.objects.filter(pk=ended.pk).update(frame_duration_s=FRAME_S)
    ended.refresh_from_db()
    for kind, frame in (("injection_start", 100), ("injection_pause", 150), ("injection_resume", 200)):
        LiveMark.objects.create(session=ended, kind=kind, frame=frame, at=timezone.now(), created_by=imaging_a)
    whole = injected_iron_ng(ended.injection)

    series = live_data.metric_series(ended)

    by_frame = dict(zip(series["frame"], series["dose_so_far_ng"], strict=True))
    states = dict(zip(series["frame"], series["injection_state"], strict=True))
    assert by_frame[99] is None and states[99] == "not started"
    assert by_frame[102] is None  # 3 % given: under the minimum fraction, no percent
    assert by_frame[129] == pytest.approx(0.30 * whole)  # frames 100-129 ran
    assert by_frame[180] == pytest.approx(0.50 * whole) and states[180] == "paused"
    assert by_frame[259] == pytest.approx(1.0 * whole)  # 50 + 60 frames: capped at the whole dose


def test_the_page_says_what_the_percentages_are_of(browser_client, imaging_a, ended, settings):  # noqa: F811
    settings.LIVE_INJECTION_EXPECTED_S = 120.0
    html = browser_client(imaging_a).get(f"/live/{ended.pk}/").content.decode()
    config = _config(html)
    assert config["injection_expected_s"] == 120.0
    assert 0 < config["dose_min_fraction"] < 1
    assert 'id="dose-basis"' in html
    assert "% of the dose injected so far" in html
    assert "whole dose over 120 s" in html
    assert config["injection_expected_source"] == "platform default"
    assert "the platform default: the injection's record gives no planned duration" in html


def test_the_record_uses_the_injections_own_planned_duration(ended, imaging_a, settings):  # noqa: F811
    settings.LIVE_INJECTION_EXPECTED_S = 100 * FRAME_S  # the default; the record says 50 frames
    LiveSession.objects.filter(pk=ended.pk).update(frame_duration_s=FRAME_S)
    Injection.objects.filter(pk=ended.injection_id).update(planned_duration_s=Decimal(str(round(50 * FRAME_S, 3))))
    ended.refresh_from_db()
    LiveMark.objects.create(session=ended, kind="injection_start", frame=100, at=timezone.now(), created_by=imaging_a)
    whole = injected_iron_ng(ended.injection)

    series = live_data.metric_series(ended)

    by_frame = dict(zip(series["frame"], series["dose_so_far_ng"], strict=True))
    assert by_frame[129] == pytest.approx(0.60 * whole, rel=1e-3)  # 30 of the record's 50 frames
    assert by_frame[149] == pytest.approx(1.0 * whole)  # the planned 50 frames ran: the whole dose


def test_the_page_names_the_records_planned_duration(browser_client, imaging_a, ended, settings):  # noqa: F811
    settings.LIVE_INJECTION_EXPECTED_S = 600.0
    Injection.objects.filter(pk=ended.injection_id).update(planned_duration_s=Decimal("17.234"))
    html = browser_client(imaging_a).get(f"/live/{ended.pk}/").content.decode()
    config = _config(html)
    assert config["injection_expected_s"] == 17.234
    assert config["injection_expected_source"] == "the injection's record"
    assert 'whole dose over 17.2 s, <span id="planned-source">planned in the injection\'s record</span>' in html
