"""The live page in a real browser (issue #16), over the whole path: imaging staff start a
session from the injection and issue the bridge a scanner token on the page; the bridge
(``python -m bridge replay``, a subprocess) streams a simulated injection in which part of
the cells go to the lungs into this test's server; the live worker (a thread of the
server, in-memory transport) computes and publishes; a clinician's page draws the curves
and the image, shows the off-target alert and acknowledges it with a reason; the session
ends and the page, now the record, shows the live numbers next to the offline ones of the
recorded scan. Another site's coordinator gets 404.

Needs Chromium and Playwright (tests.services.require_chromium: skipped locally without
them, a failure under CI_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import time
import zoneinfo

import pytest
from django.conf import settings as django_settings
from django.test import Client

from imaging import selectors as imaging_selectors
from imaging.models import Scan
from imaging.services.rois import roi_define
from imaging.services.scanners import scanner_register, system_matrix_register
from live.models import LiveMark
from recon import live_simulate
from recon import simulate as sim
from tests import factories as f
from tests.imaging.helpers import process

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
FOREGROUND_FRAMES = 700  # 15 s at 46.4 frames/s; the bridge replays at 2x
SPEED = 2
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


@pytest.fixture
def injection_stream(tmp_path, ready, site_a, settings):
    """load_demo_live's shape, small: a streaming scanner, its calibration, the subject's
    regions, and the stream of an injection whose dose is the injection's own iron."""
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    subject, _consent, batch = ready
    injection = f.InjectionFactory(batch=batch, subject=subject, administered_cells=20_000_000)
    folder = tmp_path / "stream"
    live_simulate.simulate_injection_stream(
        folder,
        dims=2,
        grid=(12, 12, 1),
        num_frames=FOREGROUND_FRAMES,
        background_frames=(40, 20),
        dose_ng=imaging_selectors.injected_iron_ng(injection),
        lung_fraction=0.3,
        num_averages=33,
        seed=2026,
    )
    model = sim.scanner_preset(2)
    scanner = scanner_register(
        actor=None,
        site=site_a,
        name="Preclinical MPI, live stream (simulated)",
        manufacturer="recon.simulate",
        model="2D FFP Lissajous, streaming",
        topology="FFP",
        base_frequency_hz=model.base_frequency_hz,
        dividers=list(model.dividers),
        drive_amplitudes_t=list(model.drive_amplitude_t),
        gradient_t_per_m=list(model.gradient_t_per_m),
    )
    calibration = system_matrix_register(
        actor=None,
        scanner=scanner,
        name="Simulated 12x12 live calibration",
        tracer_product=batch.nanoparticle_lot.product,
        source_path=folder / "calibration.mdf",
    )
    for record in json.loads((folder / "rois.json").read_text())["rois"]:
        geometry = {k: v for k, v in record.items() if k not in ("name", "kind")}
        roi_define(actor=None, subject=subject, name=record["name"], kind=record["kind"], geometry=geometry)
    return injection, folder / "stream.mdf", calibration


#: (top, bottom, right) in the viewport of what must be seen together when an alert is up.
ON_SCREEN = (
    "() => Object.fromEntries(['#live-mip', '#curve-iron', '#curve-off', '#alert-banner'].map(s => {"
    " const r = document.querySelector(s).getBoundingClientRect(); return [s, [r.top, r.bottom, r.right]]; }))"
)


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def _wait(page, expression: str, timeout_s: float) -> None:
    """Poll ``expression`` (a function's source) in the page: the CSP forbids the eval
    Playwright's wait_for_function uses."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if page.evaluate(expression):
                return
        except importlib.import_module(
            "playwright.sync_api"
        ).Error:  # the page is navigating (the session ended: on to the record)
            pass
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout_s} s: {expression}")


def test_the_live_page_from_start_to_record(
    chromium, live_server, injection_stream, imaging_a, investigator_a, coordinator_b, settings, monkeypatch
):
    # Playwright's sync API keeps an event loop in this thread; the ORM calls here are sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    injection, stream, calibration = injection_stream
    errors: list[str] = []
    browser, contexts = chromium, []

    def page_of(user):
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        contexts.append(context)
        context.add_cookies(
            [{"name": django_settings.SESSION_COOKIE_NAME, "value": _cookie(user), "url": live_server.url}]
        )
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    # Imaging staff open the session from the injection, and get the bridge a token.
    staff = page_of(imaging_a)
    staff.goto(f"{live_server.url}/injections/{injection.pk}/live/")
    staff.select_option("#id_system_matrix", value=str(calibration.pk))
    staff.click("button:has-text('Start live monitoring')")
    session = int(re.search(r"/live/(\d+)/$", staff.url).group(1))
    staff.click("button:has-text('Issue a scanner token')")
    key = staff.text_content("#bridge-token").strip()
    command = staff.text_content("#bridge-command").split()
    assert command[:4] == ["python", "-m", "bridge", "replay"] and command[command.index("--token") + 1] == key
    # The live engine is prepared as the session opens; the page asks until it says so.
    assert staff.get_attribute("#engine-state", "data-state") in ("preparing", "ready")
    _wait(staff, "() => document.getElementById('engine-state').dataset.state === 'ready'", 60)
    assert "engine ready" in staff.text_content("#engine-badge")

    # A clinician watches while the bridge streams.
    clinician = page_of(investigator_a)
    clinician.goto(f"{live_server.url}/live/{session}/")
    command[command.index("MEASUREMENT.mdf")] = str(stream)
    # The injection starts before the first frame: a mark with no frame yet.
    clinician.click("button[data-mark=injection_start]")
    _wait(clinician, "() => /Injection started/.test(document.getElementById('mark-rows').textContent)", 10)
    assert clinician.is_disabled("button[data-mark=injection_start]")
    # The row the script adds names the time on the site's clock (site A: Berlin), as the
    # server's rows do (issue #18).
    started = LiveMark.objects.get(session_id=session, kind="injection_start").at.astimezone(BERLIN)
    assert f"{started:%H:%M:%S} {started.tzname()}" in clinician.text_content("#mark-rows")
    assert " UTC" not in clinician.text_content("#mark-rows")
    bridge = subprocess.Popen(
        [sys.executable, *command[1:], "--speed", str(SPEED)],
        cwd=django_settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(clinician, "() => window.MpiLive.series.t.length > 100", 60)
        # Paused, then stopped while paused: the buttons follow the order rules.
        clinician.click("button[data-mark=injection_pause]")
        _wait(clinician, "() => !document.querySelector('button[data-mark=injection_resume]').disabled", 10)
        clinician.click("button[data-mark=injection_stop]")
        _wait(clinician, "() => document.getElementById('injection-state').textContent === 'stopped'", 10)
        assert all(
            clinician.is_disabled(f"button[data-mark={k}]")
            for k in ("injection_start", "injection_pause", "injection_resume", "injection_stop")
        )
        _wait(clinician, "() => /■ stop/.test(document.getElementById('curve-iron').textContent)", 5)
        _wait(clinician, "() => /peak/.test(document.getElementById('image-caption').textContent)", 30)
        _wait(clinician, "() => !document.getElementById('alert-banner').hidden", 60)
        # The lungs' accumulation raises the off-target alerts; the injection stopped early also
        # raises "target low" (from the stop mark the whole dose counts as given).
        _wait(clinician, "() => /Off-target/.test(document.getElementById('alert-rows').textContent)", 60)
        assert "ALERT" in clinician.text_content("#alert-title")
        raised = [r.locator("td").nth(4).inner_text() for r in clinician.locator("#alert-rows tr").all()]
        assert raised and all(re.fullmatch(r"\d\d:\d\d:\d\d CES?T", t) for t in raised), raised
        # On the 1920 x 1080 screen the image, both curves and the banner are in view at once.
        clinician.evaluate("() => window.scrollTo(0, 0)")
        boxes = clinician.evaluate(ON_SCREEN)
        assert all(top >= 0 and bottom <= 1080 and right <= 1920 for top, bottom, right in boxes.values()), boxes
        clinician.fill("#alert-reason", "Injection paused; catheter position checked.")
        clinician.click("#alert-ack button")
        _wait(clinician, "() => /investigator_a/.test(document.getElementById('alert-rows').textContent)", 20)
        output, _ = bridge.communicate(timeout=120)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    assert bridge.returncode == 0, output
    assert json.loads(output.strip().splitlines()[-1])["frames_sent"] == FOREGROUND_FRAMES + 60

    # The session ended: the page becomes the record; offline numbers once quantified.
    _wait(clinician, "() => !!document.getElementById('h-record')", 60)
    scan = Scan.objects.get(live_session__pk=session)
    process(scan)
    clinician.reload()
    assert "quantified by the pipeline" in clinician.content()
    rows = [" ".join(r.split()) for r in clinician.locator("#compare-rows tr").all_inner_texts()]
    assert any(r.startswith("At the target") and r.count("%") >= 3 for r in rows), rows
    assert "Injection paused; catheter position checked." in clinician.content()
    marks = [" ".join(r.split()) for r in clinician.locator("#mark-rows tr").all_inner_texts()]
    assert [m.split(" ")[0:2] for m in marks] == [
        ["Injection", "started"],
        ["Injection", "paused"],
        ["Injection", "stopped"],
    ]
    assert all("investigator_a" in m for m in marks) and "before the stream" in marks[0]
    assert "❚❚ pause" in clinician.text_content("#curve-iron")  # the record's curves carry the marks

    # Another site's coordinator: nothing.
    assert page_of(coordinator_b).goto(f"{live_server.url}/live/{session}/").status == 404
    for context in contexts:
        context.close()
    assert errors == []
