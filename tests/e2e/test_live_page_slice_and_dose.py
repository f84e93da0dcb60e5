"""The live page in a real browser (issue #16), the points added to it: in % of the dose
injected so far (the marks and the planned rate, ``live.dose``), with the basis said on
the page; a 3D session's chosen slice (plane and index, by keyboard); and the 1920 x 1080
screenshots during the stream and at the alert (artifacts/screenshots/, reviewed by eye).

The same whole path as test_live_page: the bridge streams a simulated injection into this
test's server, the live worker (a thread of the server) publishes, the page draws."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from django.conf import settings as django_settings

from imaging import selectors as imaging_selectors
from imaging.services.rois import roi_define
from imaging.services.scanners import scanner_register, system_matrix_register
from live.management.commands.load_demo_live import num_averages
from live.models import LiveSession
from live.services.sessions import session_create
from recon import live_simulate
from recon import simulate as sim
from tests import factories as f
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_live_page import _cookie, _wait
from trials.models import Injection

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _stream(tmp_path, ready, site_a, settings, *, dims: int, grid, frames: int):
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    subject, _consent, batch = ready
    injection = cast(Injection, f.InjectionFactory(batch=batch, subject=subject, administered_cells=20_000_000))
    folder = tmp_path / "stream"
    live_simulate.simulate_injection_stream(
        folder,
        dims=dims,
        grid=grid,
        num_frames=frames,
        background_frames=(40, 20),
        dose_ng=imaging_selectors.injected_iron_ng(injection),
        lung_fraction=0.3,
        num_averages=num_averages(dims),  # load_demo_live's: a frame of about 21.5 ms
        seed=2026,
    )
    model = sim.scanner_preset(dims)
    scanner = scanner_register(
        actor=None,
        site=site_a,
        name=f"Preclinical MPI {dims}D, live stream (simulated)",
        manufacturer="recon.simulate",
        model=f"{dims}D FFP Lissajous, streaming",
        topology="FFP",
        base_frequency_hz=model.base_frequency_hz,
        dividers=list(model.dividers),
        drive_amplitudes_t=list(model.drive_amplitude_t),
        gradient_t_per_m=list(model.gradient_t_per_m),
    )
    calibration = system_matrix_register(
        actor=None,
        scanner=scanner,
        name=f"Simulated {dims}D live calibration",
        tracer_product=batch.nanoparticle_lot.product,
        source_path=folder / "calibration.mdf",
    )
    for record in json.loads((folder / "rois.json").read_text())["rois"]:
        geometry = {k: v for k, v in record.items() if k not in ("name", "kind")}
        roi_define(actor=None, subject=subject, name=record["name"], kind=record["kind"], geometry=geometry)
    return injection, folder / "stream.mdf", calibration


class _Viewer:
    def __init__(self, chromium, live_server, user):
        self.context = chromium.new_context(viewport={"width": 1920, "height": 1080}, locale="en-GB", timezone_id="UTC")
        self.context.add_cookies(
            [{"name": django_settings.SESSION_COOKIE_NAME, "value": _cookie(user), "url": live_server.url}]
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str, *, full_page: bool = False) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def _bridge(live_server, session, token_user, stream: Path, speed: float) -> subprocess.Popen:
    from compliance.tokens import scoped_token_issue
    from config.token_scopes import TokenScope

    key = scoped_token_issue(actor=token_user, user=token_user, name="bridge", scope=TokenScope.SCANNER).key
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "replay",
            str(stream),
            "--url",
            live_server.url,
            "--session",
            str(session.pk),
            "--token",
            key,
            "--speed",
            str(speed),
        ],
        cwd=django_settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_percent_of_the_dose_so_far_and_the_screens_during_the_stream_and_at_the_alert(
    chromium, live_server, tmp_path, ready, site_a, imaging_a, investigator_a, settings, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.LIVE_INJECTION_EXPECTED_S = 2.0  # planned: 2 s at a constant rate
    injection, stream, calibration = _stream(tmp_path, ready, site_a, settings, dims=2, grid=(12, 12, 1), frames=1000)
    session = session_create(actor=imaging_a, injection=injection, system_matrix=calibration)
    viewer = _Viewer(chromium, live_server, investigator_a)
    page = viewer.page
    page.goto(f"{live_server.url}/live/{session.pk}/")
    page.check("input[name=unit][value=percent]")
    bridge = _bridge(live_server, session, imaging_a, stream, speed=1)
    try:
        _wait(page, "() => window.MpiLive.series.t.length > 60", 60)
        _wait(page, "() => /peak/.test(document.getElementById('image-caption').textContent)", 30)
        viewer.shot("live-1920-stream")
        # No start mark yet: the percentages are of the whole dose, and the page says so.
        assert "whole dose" in page.text_content("#label-target")
        assert "no start mark" in page.text_content("#curve-iron")
        page.click("button[data-mark=injection_start]")
        _wait(page, "() => /dose injected so far/.test(document.getElementById('label-target').textContent)", 30)
        assert "% of the dose injected so far" in page.text_content("#curve-iron")
        assert re.search(r"injected so far [\d,.]+ ng Fe \(\d+ %\)", page.text_content("#dose-basis"))
        # Which planned duration and where from: the injection's record gives none here.
        assert "platform default 2.0 s at a constant rate" in page.text_content("#dose-basis")
        _wait(page, "() => !document.getElementById('alert-banner').hidden", 90)
        viewer.shot("live-1920-alert")
        _wait(
            page,
            "() => /injected so far [\\d,.]+ ng Fe \\(100 %\\)/.test(document.getElementById('dose-basis').textContent)",
            30,
        )
        last = page.evaluate(
            "() => { var s = window.MpiLive.series; return [s.sofar[s.sofar.length - 1], s.state[s.state.length - 1]]; }"
        )
        assert (
            last[0] == pytest.approx(imaging_selectors.injected_iron_ng(injection), rel=1e-9) and last[1] == "running"
        )
        page.click("button[data-mark=injection_stop]")
        bridge.communicate(timeout=120)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    _wait(page, "() => !!document.getElementById('h-record')", 60)
    page.check("input[name=unit][value=percent]")
    assert "% of the dose injected so far" in page.text_content("#curve-iron")  # the record draws it too
    viewer.shot("live-1920-record", full_page=True)
    viewer.context.close()
    assert viewer.errors == []


def test_a_3d_session_shows_the_chosen_slice_by_keyboard(
    chromium, live_server, tmp_path, ready, site_a, imaging_a, investigator_a, settings, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    injection, stream, calibration = _stream(tmp_path, ready, site_a, settings, dims=3, grid=(8, 8, 8), frames=2000)
    session = session_create(actor=imaging_a, injection=injection, system_matrix=calibration)
    viewer = _Viewer(chromium, live_server, investigator_a)
    page = viewer.page
    page.goto(f"{live_server.url}/live/{session.pk}/")
    assert page.is_hidden("#slice-box")
    bridge = _bridge(live_server, session, imaging_a, stream, speed=1)
    try:
        _wait(page, "() => /Slice z = 4 /.test(document.getElementById('slice-caption').textContent)", 120)
        # Keyboard only: the plane (arrow keys in the radio group), then the index (+ button, slider).
        page.focus("input[name=slice-plane][value=z]")
        page.keyboard.press("ArrowLeft")  # z -> y
        assert page.is_checked("input[name=slice-plane][value=y]")
        page.focus("button[data-step='1']")
        page.keyboard.press("Enter")
        page.focus("#slice-index")
        page.keyboard.press("ArrowRight")
        assert page.text_content("#slice-index-out").startswith("y = 6 ")
        _wait(page, "() => /Slice y = 6 /.test(document.getElementById('slice-caption').textContent)", 30)
        caption = page.text_content("#slice-caption")
        frame = int(re.search(r"up to frame (\d+)", caption).group(1))
        _wait(
            page,
            f"() => +(/up to frame (\\d+)/.exec(document.getElementById('slice-caption').textContent) || [0, 0])[1] > {frame}",
            30,
        )
        viewer.shot("live-1920-3d-slice")
        bridge.communicate(timeout=120)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    assert LiveSession.objects.get(pk=session.pk).status == "ended"
    viewer.context.close()
    assert viewer.errors == []
