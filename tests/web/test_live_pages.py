"""The live injection pages (issue #16): who may start and watch a session, the start
form opening one through the service, the ended session's record (curves from the stored
metrics, alerts with who acknowledged them and why, live next to offline numbers), and no
inline script or style (the CSP holds).

Sessions, metrics and alerts are rows written directly: what the live worker and the
services store is their tests' business; here, what the pages make of it."""

from __future__ import annotations

import datetime as dt
import json
import re
import types
import zoneinfo
from html.parser import HTMLParser

import pytest
from django.utils import timezone

from imaging.models import RoiKind
from live import feed
from live.models import LiveAlert, LiveMark, LiveMetric, LiveSession
from live.services.marks import mark_enter
from tests import factories as f
from tests.imaging import factories as fi
from trials.models import Injection
from web import live_data

T0 = 1_764_000_000.0  # unix seconds of the first frame
FRAME_S = 0.0215
OFF_TARGET_THRESHOLD = 20.0
# 200 stored frames: the last RECORD_TAIL_FRAMES (50) target 900 ng, lungs 300 ng; the 150
# before them 100 / 10. Session means: target 300 ng, lungs 82.5 ng.
TAIL_TARGET_NG, TAIL_LUNGS_NG = 900.0, 300.0
MEAN_TARGET_NG, MEAN_LUNGS_NG = 300.0, 82.5
OFFLINE_TARGET_NG, OFFLINE_LUNGS_NG = 250.0, 75.0


@pytest.fixture
def live_site(ready, site_a, imaging_a):
    """Subject at site A with an injection, a scanner with a calibration for the tracer,
    and two regions (target and lungs) defined for every scan."""
    subject, consent, batch = ready
    injection = f.InjectionFactory(batch=batch, subject=subject)
    scanner = fi.ScannerFactory(site=site_a, name="Preclinical MPI")
    calibration = fi.SystemMatrixFactory(
        scanner=scanner, name="12x12 live calibration", tracer_product=batch.nanoparticle_lot.product
    )
    fi.SystemMatrixFactory(scanner=scanner, name="other tracer", tracer_product="Perimag")
    target = fi.RoiFactory(subject=subject, name="graft", kind=RoiKind.TARGET)
    lungs = fi.RoiFactory(
        subject=subject,
        name="lungs",
        kind=RoiKind.LUNGS,
        geometry={"shape": "box", "center_m": [0.0, -0.006, 0.0], "half_size_m": [0.008, 0.003, 0.0005]},
    )
    return types.SimpleNamespace(
        subject=subject, injection=injection, scanner=scanner, calibration=calibration, target=target, lungs=lungs
    )


def _session(live_site, user, **fields) -> LiveSession:
    return LiveSession.objects.create(
        injection=live_site.injection,
        subject=live_site.subject,
        scanner=live_site.scanner,
        system_matrix=live_site.calibration,
        created_by=user,
        **fields,
    )


@pytest.fixture
def streaming(live_site, imaging_a):
    return _session(live_site, imaging_a, status="streaming", frames_received=120, frames_recorded=120)


def _metrics(session, count: int = 200) -> None:
    rows = []
    tail = count - live_data.RECORD_TAIL_FRAMES
    for frame in range(count):
        target, lungs = (TAIL_TARGET_NG, TAIL_LUNGS_NG) if frame >= tail else (100.0, 10.0)
        rows.append(
            LiveMetric(
                session=session,
                frame=frame + 60,  # after 60 background frames
                acquired_at=T0 + (frame + 60) * FRAME_S,
                published_at=T0 + (frame + 60) * FRAME_S + 0.1,
                rois={
                    "graft": {"kind": "target", "iron_ng": target, "uncertainty_ng": 20.0},
                    "lungs": {"kind": "lungs", "iron_ng": lungs, "uncertainty_ng": 15.0},
                },
                target_percent_of_injected=target / 12.5,
                off_target_percent=100.0 * lungs / (target + lungs),
            )
        )
    LiveMetric.objects.bulk_create(rows)


@pytest.fixture
def ended(live_site, imaging_a, investigator_a):
    """An ended session whose recording became a quantified scan, with an acknowledged
    off-target alert and an open lag alert."""
    scan = fi.ScanFactory(
        injection=live_site.injection,
        subject=live_site.subject,
        scanner=live_site.scanner,
        hours_after_injection=0.0,
        filename="live-1.mdf",
        metrics_summary={"retention_percent": 80.0, "off_target_percent": 20.0},
    )
    reconstruction = fi.ReconstructionFactory(scan=scan, system_matrix=live_site.calibration)
    fi.MeasurementFactory(
        reconstruction=reconstruction, roi=live_site.target, iron_ng=OFFLINE_TARGET_NG, retention_percent=80.0
    )
    fi.MeasurementFactory(
        reconstruction=reconstruction,
        roi=live_site.lungs,
        iron_ng=OFFLINE_LUNGS_NG,
        retention_percent=20.0,
        off_target_percent=20.0,
    )
    session = _session(
        live_site,
        imaging_a,
        status="ended",
        frames_received=260,
        frames_recorded=260,
        scan=scan,
        started_at=timezone.now(),
        ended_at=timezone.now(),
    )
    _metrics(session)
    LiveAlert.objects.create(
        session=session,
        kind=LiveAlert.Kind.OFF_TARGET_SHARE,
        frame=215,
        acquired_at=T0 + 215 * FRAME_S,
        value_percent=25.0,
        threshold_percent=OFF_TARGET_THRESHOLD,
        message="Off-target share 25 % above the 20 % threshold for 3 blocks.",
        acknowledged_by=investigator_a,
        acknowledged_at=timezone.now(),
        acknowledgement_reason="Injection paused, catheter position checked",
    )
    LiveAlert.objects.create(session=session, kind=LiveAlert.Kind.LAG, frame=230, message="Live results 1.4 s late.")
    return session


def _config(html: str) -> dict:
    match = re.search(r'<script id="live-config" type="application/json">(.*?)</script>', html, re.S)
    assert match, "the page's data element"
    return json.loads(match.group(1))


# --------------------------------------------------------------------------- access


def test_imaging_staff_see_the_start_form_with_calibrations_consent_and_threshold(browser_client, imaging_a, live_site):
    page = browser_client(imaging_a).get(f"/injections/{live_site.injection.pk}/live/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "12x12 live calibration" in html and "other tracer" not in html  # the tracer's calibrations only
    assert "in force" in html and "not in force" not in html
    assert "20 %" in html  # the trial's off-target threshold
    assert "600 s at a constant rate (platform default)" in html  # no planned duration on the record
    Injection.objects.filter(pk=live_site.injection.pk).update(planned_duration_s=45)
    html = browser_client(imaging_a).get(f"/injections/{live_site.injection.pk}/live/").content.decode()
    assert "45 s at a constant rate (the injection&#x27;s record)" in html
    subject_page = browser_client(imaging_a).get(f"/subjects/{live_site.subject.pk}/").content.decode()
    assert f"/injections/{live_site.injection.pk}/live/" in subject_page


@pytest.mark.parametrize("who", ["coordinator_a", "coordinator_b", "sponsor"])
def test_only_imaging_staff_of_the_site_get_the_start_form(browser_client, live_site, who, request):
    user = request.getfixturevalue(who)
    client = browser_client(user)
    assert client.get(f"/injections/{live_site.injection.pk}/live/").status_code == 404
    assert client.post(f"/injections/{live_site.injection.pk}/live/", {}).status_code == 404
    assert not LiveSession.objects.exists()


@pytest.mark.parametrize("who", ["coordinator_a", "investigator_a", "imaging_a", "monitor"])
def test_site_members_and_monitors_watch_the_live_page(browser_client, streaming, who, request):
    page = browser_client(request.getfixturevalue(who)).get(f"/live/{streaming.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "provisional (live)" in html
    config = _config(html)
    assert config["events_url"] == f"/api/v1/live-sessions/{streaming.pk}/events/"
    assert config["threshold_percent"] == OFF_TARGET_THRESHOLD
    assert [r["name"] for r in config["regions"]] == ["graft", "lungs"]  # target first
    assert config["outlines"]["grid"] == [12, 12] and config["outlines"]["regions"]["lungs"]
    assert config["record"] is None
    assert config["page_url"] == f"/live/{streaming.pk}/"  # where the page goes once the session ends
    listed = browser_client(request.getfixturevalue(who)).get("/live/").content.decode()
    assert f'href="/live/{streaming.pk}/"' in listed


@pytest.mark.parametrize("who", ["coordinator_b", "sponsor"])
def test_another_site_and_a_sponsor_get_404(browser_client, streaming, who, request):
    client = browser_client(request.getfixturevalue(who))
    assert client.get(f"/live/{streaming.pk}/").status_code == 404
    assert client.post(f"/live/{streaming.pk}/token/").status_code == 404
    if who == "coordinator_b":
        assert f"/live/{streaming.pk}/" not in client.get("/live/").content.decode()
    else:
        assert client.get("/live/").status_code == 404


def test_the_bridge_command_is_shown_to_imaging_staff_only(browser_client, streaming, imaging_a, coordinator_a):
    html = browser_client(imaging_a).get(f"/live/{streaming.pk}/").content.decode()
    assert "python -m bridge replay MEASUREMENT.mdf --url http://testserver --token TOKEN" in html
    assert f"--session {streaming.pk}" in html and "/api/v1/auth/tokens/" in html
    assert "python -m bridge" not in browser_client(coordinator_a).get(f"/live/{streaming.pk}/").content.decode()


def test_imaging_staff_get_a_scanner_token_once_in_the_command(browser_client, streaming, imaging_a):
    from compliance.models import ApiToken

    page = browser_client(imaging_a).post(f"/live/{streaming.pk}/token/")
    assert page.status_code == 200
    token = ApiToken.objects.get(user=imaging_a)
    assert token.scope == "scanner"
    key = re.search(r'id="bridge-token">([^<]+)<', page.content.decode()).group(1)
    assert f"--token {key} --session {streaming.pk}" in page.content.decode()
    assert key not in browser_client(imaging_a).get(f"/live/{streaming.pk}/").content.decode()


# --------------------------------------------------------------------------- start


def test_the_start_form_opens_a_session_and_leads_to_its_page(browser_client, imaging_a, live_site, monkeypatch):
    prepared: list[int] = []
    monkeypatch.setattr(feed, "ensure_prepared", prepared.append)
    response = browser_client(imaging_a).post(
        f"/injections/{live_site.injection.pk}/live/", {"system_matrix": live_site.calibration.pk, "scanner": ""}
    )
    session = LiveSession.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/live/{session.pk}/"
    assert (session.injection, session.system_matrix, session.scanner) == (
        live_site.injection,
        live_site.calibration,
        live_site.scanner,
    )
    assert session.created_by == imaging_a and session.status == "open"
    assert prepared == [session.pk]  # its live engine is prepared as it opens, as through the API


def test_the_page_says_whether_the_live_engine_is_ready(browser_client, imaging_a, live_site):
    session = _session(live_site, imaging_a)
    html = browser_client(imaging_a).get(f"/live/{session.pk}/").content.decode()
    assert 'id="engine-state" data-state="preparing"' in html and "engine preparing" in html
    LiveSession.objects.filter(pk=session.pk).update(engine_prepared_at=timezone.now())
    html = browser_client(imaging_a).get(f"/live/{session.pk}/").content.decode()
    assert 'data-state="ready"' in html and "engine ready" in html
    LiveSession.objects.filter(pk=session.pk).update(status="ended")
    html = browser_client(imaging_a).get(f"/live/{session.pk}/").content.decode()
    assert 'id="engine-state"' not in html  # the record has no engine to wait for


def test_the_start_form_refuses_another_tracers_calibration(browser_client, imaging_a, live_site):
    other = live_site.scanner.system_matrices.get(name="other tracer")
    response = browser_client(imaging_a).post(
        f"/injections/{live_site.injection.pk}/live/", {"system_matrix": other.pk}
    )
    assert response.status_code == 400
    assert not LiveSession.objects.exists()


# --------------------------------------------------------------------------- the record


def test_the_ended_session_is_its_record(browser_client, coordinator_a, ended):
    page = browser_client(coordinator_a).get(f"/live/{ended.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    record = _config(html)["record"]
    # The curves: every stored metric, in frame order, times from the first frame.
    assert record["count"] == 200 and record["step"] == 1
    assert record["frame"][0] == 60 and record["frame"][-1] == 259
    assert record["t"][0] == 0.0 and record["t"][-1] == pytest.approx(199 * FRAME_S, abs=1e-3)
    assert record["rois"]["graft"]["iron_ng"][-1] == TAIL_TARGET_NG
    assert record["rois"]["lungs"]["iron_ng"][0] == 10.0
    assert record["off_target_percent"][-1] == pytest.approx(25.0)
    # The alerts and who acknowledged them, with the reason.
    assert "investigator_a" in html and "Injection paused, catheter position checked" in html
    assert "not acknowledged" in html  # the lag alert
    # Live (the session mean, like the offline average of the recording's frames, and the
    # end of the session) next to offline (the recorded scan), and the difference.
    comparison = page.context["comparison"]
    rows = {row["name"]: row for row in comparison["rows"]}
    assert rows["graft"]["live_ng"] == pytest.approx(MEAN_TARGET_NG)
    assert rows["graft"]["end_ng"] == pytest.approx(TAIL_TARGET_NG)
    assert rows["graft"]["offline_ng"] == OFFLINE_TARGET_NG
    assert rows["graft"]["difference_absolute"] == pytest.approx(MEAN_TARGET_NG - OFFLINE_TARGET_NG)
    assert rows["graft"]["difference_relative_percent"] == pytest.approx(20.0)
    assert rows["lungs"]["difference_relative_percent"] == pytest.approx(10.0)
    # The share of the averaged iron (as offline: of the averaged frames), not a mean of shares.
    share = 100.0 * MEAN_LUNGS_NG / (MEAN_LUNGS_NG + MEAN_TARGET_NG)
    assert comparison["off_target"]["live"] == pytest.approx(share)
    assert comparison["off_target"]["end"] == pytest.approx(25.0) and comparison["off_target"]["offline"] == 20.0
    assert comparison["target"]["offline"] == 80.0  # the target measurement's retention
    assert "300.0" in html and "250.0" in html and "50.0" in html and "20.0 %" in html and "900.0" in html
    assert "Replay 1×" in html and "Replay 4×" in html
    # Linked from the subject's timeline.
    timeline = browser_client(coordinator_a).get(f"/subjects/{ended.subject_id}/").content.decode()
    assert f'href="/live/{ended.pk}/"' in timeline


def test_the_record_thins_a_long_session_but_keeps_its_last_point(ended, monkeypatch):
    series = live_data.metric_series(ended, max_points=30)
    assert series["count"] == 200 and series["step"] == 7
    assert series["frame"][-1] == 259 and len(series["frame"]) == 30


# --------------------------------------------------------------------------- CSP


class _Markup(HTMLParser):
    def __init__(self):
        super().__init__()
        self.inline_scripts: list[dict] = []
        self.scripts: list[str] = []
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.style_elements = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.scripts.append(attributes["src"])
            else:
                self.inline_scripts.append(attributes)
        if tag == "style":
            self.style_elements += 1
        if "style" in attributes:
            self.inline_styles.append(tag)
        self.handlers += [name for name in attributes if name.startswith("on")]


@pytest.mark.parametrize("which", ["streaming", "ended"])
def test_the_live_pages_need_no_inline_script_or_style(browser_client, imaging_a, live_site, which, request):
    session = request.getfixturevalue(which)
    client = browser_client(imaging_a)
    for url in (f"/live/{session.pk}/", "/live/", f"/injections/{live_site.injection.pk}/live/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "script-src 'self'" in response["Content-Security-Policy"]
        markup = _Markup()
        markup.feed(response.content.decode())
        # The one script element without src is data (application/json): never executed.
        assert all(a.get("type") == "application/json" for a in markup.inline_scripts), url
        assert not markup.inline_styles and not markup.handlers and not markup.style_elements, url
        if url == f"/live/{session.pk}/":
            assert any(src.endswith("web/live.js") for src in markup.scripts)


# --------------------------------------------------------------------------- demo


@pytest.fixture
def demo_module(monkeypatch, live_site, imaging_a):
    """A demo platform's ``web.demo_stream``: ready, and starting records its call."""
    calls = []

    def start_demo_stream(*, base_url, speed=1.0):
        calls.append((base_url, speed))
        return types.SimpleNamespace(session=_session(live_site, imaging_a), command=["python", "-m", "bridge"])

    module = types.SimpleNamespace(demo_stream_ready=lambda: True, start_demo_stream=start_demo_stream, calls=calls)
    monkeypatch.setattr("web.live_views.demo_stream", module)
    return module


def test_the_demo_button_starts_the_demo_stream_and_opens_its_page(browser_client, coordinator_a, demo_module):
    client = browser_client(coordinator_a)
    assert "Start the demo stream" in client.get("/live/").content.decode()
    response = client.post("/live/demo/")
    session = LiveSession.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/live/{session.pk}/"
    assert demo_module.calls == [("http://testserver", 1.0)]


def test_there_is_no_demo_button_in_production(browser_client, coordinator_a, demo_module, settings):
    settings.PRODUCTION = True
    client = browser_client(coordinator_a)
    assert "Start the demo stream" not in client.get("/live/").content.decode()
    assert client.post("/live/demo/").status_code == 404
    assert demo_module.calls == [] and not LiveSession.objects.exists()


def test_the_off_target_share_of_averaged_iron_leaves_out_regions_without_iron():
    kinds = {"graft": "target", "lungs": "lungs", "liver": "liver"}
    assert live_data.off_target_share({"graft": 300.0, "lungs": 100.0, "liver": -40.0}, kinds) == pytest.approx(25.0)
    assert live_data.off_target_share({"graft": -1.0, "lungs": None, "liver": 0.0}, kinds) is None


# --------------------------------------------------------------------------- injection marks


def _mark_buttons(html: str) -> dict[str, bool]:
    """{kind: enabled} of the page's mark buttons."""
    found = re.findall(r'<button type="button" class="mark-button" data-mark="([a-z_]+)"( disabled)?>', html)
    return {kind: not disabled for kind, disabled in found}


@pytest.mark.parametrize("who", ["investigator_a", "coordinator_a", "imaging_a"])
def test_the_clinicians_get_the_mark_buttons_in_order(browser_client, streaming, who, request):
    user = request.getfixturevalue(who)
    html = browser_client(user).get(f"/live/{streaming.pk}/").content.decode()
    assert _mark_buttons(html) == {
        "injection_start": True,
        "injection_pause": False,
        "injection_resume": False,
        "injection_stop": False,
    }
    config = _config(html)
    assert config["can_mark"] and config["marks_url"] == f"/api/v1/live-sessions/{streaming.pk}/marks/"
    mark_enter(actor=user, session=streaming, kind="injection_start")
    html = browser_client(user).get(f"/live/{streaming.pk}/").content.decode()
    assert _mark_buttons(html) == {
        "injection_start": False,
        "injection_pause": True,
        "injection_resume": False,
        "injection_stop": True,
    }
    assert _config(html)["injection_state"] == "running"
    assert [m["kind"] for m in _config(html)["marks"]] == ["injection_start"]


def test_a_monitor_sees_the_marks_but_no_button(browser_client, streaming, monitor, investigator_a):
    mark_enter(actor=investigator_a, session=streaming, kind="injection_start", note="pump on")
    html = browser_client(monitor).get(f"/live/{streaming.pk}/").content.decode()
    assert _mark_buttons(html) == {} and not _config(html)["can_mark"]
    assert "Injection started" in html and "pump on" in html


def test_the_record_lists_the_marks_with_who_entered_them(browser_client, coordinator_a, ended, investigator_a):
    for i, kind in enumerate(["injection_start", "injection_pause", "injection_resume", "injection_stop"]):
        LiveMark.objects.create(
            session=ended, kind=kind, at=timezone.now(), frame=60 + 40 * i, created_by=investigator_a, note=f"n{i}"
        )
    html = browser_client(coordinator_a).get(f"/live/{ended.pk}/").content.decode()
    assert _mark_buttons(html) == {}  # the session is over: no button
    rows = re.findall(
        r'<tr data-mark="\d+"><td><strong>([^<]+)</strong></td><td class="num">(\d+)</td>'
        r'<td><time datetime="[^"]+Z" title="[^"]+ UTC">\d\d:\d\d:\d\d CES?T</time></td><td>([^<]*)</td><td>([^<]*)</td></tr>',
        html,
    )
    assert rows == [
        ("Injection started", "60", "investigator_a", "n0"),
        ("Injection paused", "100", "investigator_a", "n1"),
        ("Injection resumed", "140", "investigator_a", "n2"),
        ("Injection stopped", "180", "investigator_a", "n3"),
    ]
    assert [m["frame"] for m in _config(html)["marks"]] == [60, 100, 140, 180]


def test_the_live_pages_show_times_on_the_sites_clock(browser_client, coordinator_a, ended, investigator_a):
    """Issue #18: the list, the record and the script's data speak the site's clock
    (site A: Berlin), zone named, UTC on hover; no time is left in bare UTC."""
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    at = dt.datetime(2026, 7, 1, 10, 15, 30, tzinfo=dt.UTC)  # 12:15:30 CEST
    LiveMark.objects.create(session=ended, kind="injection_start", at=at, frame=60, created_by=investigator_a)
    client = browser_client(coordinator_a)
    html = client.get(f"/live/{ended.pk}/").content.decode()
    assert '<time datetime="2026-07-01T10:15:30Z" title="2026-07-01 10:15:30 UTC">12:15:30 CEST</time>' in html
    acknowledged = LiveAlert.objects.get(session=ended, kind=LiveAlert.Kind.OFF_TARGET_SHARE).acknowledged_at
    assert acknowledged.astimezone(berlin).strftime("%H:%M:%S ") + acknowledged.astimezone(berlin).tzname() in html
    ended_local = ended.ended_at.astimezone(berlin)
    assert "Ended <time" in html and f"{ended_local:%Y-%m-%d %H:%M} {ended_local.tzname()}" in html
    config = _config(html)
    assert config["time_zone"] == "Europe/Berlin" and config["zone_names"] == {"60": "CET", "120": "CEST"}
    assert not re.search(r"\d\d:\d\d(:\d\d)? UTC</td>", html)
    listing = client.get("/live/").content.decode()
    opened = ended.created_at.astimezone(berlin)
    assert f"{opened:%Y-%m-%d %H:%M} {opened.tzname()}" in listing and "Opened (site's clock)" in listing
