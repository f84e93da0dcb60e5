"""Browser end-to-end tests: Playwright (the PyPI package, whose wheel bundles its
driver) drives Debian's Chromium, headless, against pytest-django's live server; scans
are processed by a real Celery worker process on the embedded filesystem broker and the
test database. Screenshots of every main page go to artifacts/screenshots/.

Without Chromium the tests skip locally and fail under CI_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests import factories as f
from tests.imaging.conftest import define_rois, pipeline, sim, simulate  # noqa: F401 - fixtures
from tests.imaging.worker import database_url, drop_broker_connections, purge
from tests.services import browser_unavailable, require_chromium

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls
# (set-up, assertions) are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium():
    path = require_chromium()
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        except Error as exc:
            browser_unavailable(str(exc).splitlines()[0])
        yield browser
        browser.close()


class Session:
    """One signed-in browser context (its own cookies) for one member of the cast."""

    def __init__(self, browser, base_url: str, timezone_id: str = "UTC"):
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-GB", timezone_id=timezone_id
        )
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.base = base_url

    def go(self, path: str):
        return self.page.goto(self.base + path)

    def login(self, user, password: str = f.PASSWORD):
        self.go("/accounts/login/")
        self.page.get_by_label("Username").fill(user.get_username())
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.base + "/")
        return self

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self):
        self.context.close()


@pytest.fixture
def browse(chromium, live_server):
    """``browse(user)`` -> a signed-in Session; closed after the test."""
    sessions = []

    def make(user=None, timezone_id: str = "UTC"):
        session = Session(chromium, live_server.url, timezone_id=timezone_id)
        sessions.append(session)
        return session.login(user) if user is not None else session

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def worker(tmp_path, live_server):
    """A real Celery worker process (ingest, recon, export queues) on a filesystem broker
    of its own, the test database and the test's media folder. This process publishes
    to the same folders."""
    from config.celery import app

    var = tmp_path / "worker-var"
    queue, processed = var / "celery" / "queue", var / "celery" / "processed"
    for folder in (queue, processed):
        folder.mkdir(parents=True)
    options = dict(app.conf.broker_transport_options or {})
    previous = dict(options)
    options.update(data_folder_in=str(queue), data_folder_out=str(queue), processed_folder=str(processed))
    app.conf.broker_transport_options = options
    drop_broker_connections(app)
    database = database_url()
    if settings.CELERY_BROKER_URL.startswith("redis://"):  # CI: the real broker
        purge(settings.CELERY_BROKER_URL)
    env = os.environ | {
        "DATABASE_URL": database,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MPI_VAR_DIR": str(var),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "ingest,recon,quant,export,live",
            "-P",
            "solo",
            "-n",
            "e2e@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"ready." not in log_path.read_bytes() and time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text(errors="replace")
        time.sleep(0.2)
    process.log_path = log_path
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    log.close()
    app.conf.broker_transport_options = previous
    drop_broker_connections(app)
