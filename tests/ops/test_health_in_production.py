"""The compose health check of `web`, as compose runs it, against gunicorn in the
production shape (MPI_ENV=production: ALLOWED_HOSTS without 127.0.0.1, the HTTPS
redirect on, PostgreSQL, Redis): it passes while the platform is ready and fails when a
dependency is sick (issue #17, item 6: it could never pass before)."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from ops import health
from ops.models import WorkerHeartbeat
from tests.gunicorn import running_gunicorn
from tests.imaging.worker import database_url
from tests.services import redis_url, require_postgres

ROOT = Path(__file__).resolve().parents[2]

# docker-compose.yml's web health check, with the port of this test's gunicorn.
COMPOSE_CHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health/ready/', timeout=8)"


def test_the_check_is_the_one_in_docker_compose():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["healthcheck"]["test"] == ["CMD", "python", "-c", COMPOSE_CHECK.format(port=8000)]
    for worker in ("worker-ingest", "worker-recon", "worker-quant", "worker-export"):
        assert compose["services"][worker]["healthcheck"]["test"] == [
            "CMD",
            "python",
            "manage.py",
            "health",
            "--worker",
        ]
    assert compose["x-app"]["environment"]["DB_CONN_MAX_AGE"] == "60"


def _get(port: int, path: str, host: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_compose_check_passes_in_production_and_fails_when_sick(tmp_path):
    require_postgres()
    broker = redis_url()
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "REQUIRE_2FA"}} | {
        "MPI_ENV": "production",
        "SECRET_KEY": "p" * 64,
        "ALLOWED_HOSTS": "trials.example.org",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker,
        "AUDIT_HMAC_KEY": settings.AUDIT_HMAC_KEY,
        "AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MPI_VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        node="celery@w1", queues=health.declared_queues(), pid=1, started_at=now, beat_at=now
    )
    with running_gunicorn("config.wsgi", env=env, log=tmp_path / "web.log") as port:

        def compose_check() -> int:
            return subprocess.run([sys.executable, "-c", COMPOSE_CHECK.format(port=port)], timeout=30).returncode

        # The production shape is real: any other page by address is refused, by name redirected to https.
        assert _get(port, "/accounts/login/", f"127.0.0.1:{port}").status == 400
        assert _get(port, "/accounts/login/", "trials.example.org").status == 301
        assert _get(port, "/health/live/", f"127.0.0.1:{port}").status == 200
        assert compose_check() == 0, (tmp_path / "web.log").read_text()[-3000:]

        WorkerHeartbeat.objects.all().delete()  # every worker gone
        assert _get(port, "/health/ready/", "10.0.0.7").status == 503
        assert compose_check() != 0
        assert _get(port, "/health/live/", "10.0.0.7").status == 200  # the process itself still answers
