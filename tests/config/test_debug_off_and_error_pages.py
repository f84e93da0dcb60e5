"""Django's debug page (settings, DATABASE_URL and CELERY_BROKER_URL with their passwords)
is never shown unless a developer switches DEBUG on; errors outside the API answer
friendly pages in the site's look; the embedded runner serves static files without
DEBUG and answers a path that climbs out of /static/ with a 404, not a 500."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from werkzeug.test import Client as WsgiClient

ROOT = Path(__file__).resolve().parents[2]


def _debug_setting(tmp_path, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "MPI_ENV", "DJANGO_SETTINGS_MODULE")}
    clean.update(MPI_VAR_DIR=str(tmp_path), **env)
    code = "import django; from django.conf import settings; django.setup(); print(settings.DEBUG)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def test_it_runs_the_embedded_default_with_debug_off(tmp_path):
    assert _debug_setting(tmp_path) == "False"


def test_it_turns_debug_on_only_when_a_developer_asks(tmp_path):
    assert _debug_setting(tmp_path, DEBUG="true") == "True"


def test_it_shows_a_friendly_404_page_in_the_site_look(client, coordinator_a):
    client.force_login(coordinator_a)
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Page not found" in html and "web/app.css" in html and "<script" not in html
    assert "DATABASE_URL" not in html and "Traceback" not in html


def test_it_shows_a_friendly_500_page_without_internals(coordinator_a, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals: redis://:hunter2@broker/0")

    monkeypatch.setattr("web.views.dashboard", broken, raising=False)
    monkeypatch.setattr("audit.middleware.RequestContextMiddleware.__call__", broken)
    client = Client(raise_request_exception=False)
    response = client.get("/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong" in html and "web/app.css" in html and "<script" not in html
    assert "hunter2" not in html and "CELERY_BROKER_URL" not in html


@pytest.mark.parametrize("value", ["false", str(2**64), "\u00b2", ""])
def test_it_answers_a_trial_that_is_not_an_id_on_the_audit_page_with_a_friendly_403(client, auditor, value):
    client.force_login(auditor)
    response = client.post("/compliance/audit/", {"trial": value})
    assert response.status_code == 403
    html = response.content.decode()
    assert "Access denied" in html and "web/app.css" in html


@pytest.fixture
def platform(settings, db):
    """The WSGI application as the embedded runner serves it (no runserver static
    handler), with DEBUG off, built after the settings so WhiteNoise reads them."""
    settings.DEBUG = False
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield WsgiClient(WSGIHandler())
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def test_it_serves_static_files_with_debug_off(platform):
    response = platform.get("/static/web/app.css")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/css")


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/config/settings.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2fconfig/settings.py",
        "/static/web/%2e%2e/%2e%2e/manage.py",
    ],
)
def test_it_answers_a_path_out_of_static_with_404(platform, path):
    response = platform.get(path)
    assert response.status_code == 404
    assert b"SECRET_KEY" not in response.get_data() and b"root:" not in response.get_data()


def test_the_embedded_runner_leaves_static_files_to_whitenoise(monkeypatch, settings):
    from trials.management.commands import runplatform

    calls = []
    monkeypatch.setattr(runplatform, "call_command", lambda *a, **kw: calls.append((a, kw)))
    runplatform.Command().handle(addrport="127.0.0.1:0", no_worker=True, no_demo=True)
    ((args, kwargs),) = [c for c in calls if c[0][0] == "runserver"]
    assert kwargs["use_static_handler"] is False


@pytest.mark.parametrize("site", [str(2**64), "\u00b2", "-1"])
def test_it_reads_a_site_filter_that_is_not_an_id_as_no_filter_on_the_list_pages(client, coordinator_a, site):
    client.force_login(coordinator_a)
    assert client.get("/subjects/", {"site": site}).status_code == 200
    assert client.get("/scans/", {"site": site}).status_code == 200
