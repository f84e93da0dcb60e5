"""/health/live/ and /health/ready/ (= /health/) for the load balancer (issue #17, item 6).

They answer in the production shape (a Host header that ALLOWED_HOSTS refuses, plain
HTTP with the HTTPS redirect on), without a sign-in, with no audit event and no session
per probe; readiness answers 503 naming the failed check, and nothing identifiable."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from ops import health
from ops.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db

PRODUCTION_SHAPE = dict(ALLOWED_HOSTS=["trials.example.org"], SECURE_SSL_REDIRECT=True)


@pytest.fixture
def workers_alive():
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        node="celery@all", queues=health.declared_queues(), pid=1, started_at=now, beat_at=now
    )


@pytest.fixture
def probe(settings):
    for name, value in PRODUCTION_SHAPE.items():
        setattr(settings, name, value)
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)  # the mounted volume
    client = Client()  # no sign-in, plain http, addressed by IP as a load balancer does

    def get(path: str, **extra):
        return client.get(path, HTTP_HOST="10.0.0.7:8000", **extra)

    return get


def test_the_production_shape_refuses_that_host_for_every_other_page(probe):
    assert probe("/accounts/login/", secure=True).status_code == 400  # DisallowedHost: the shape is real


@pytest.mark.parametrize("path", ["/health/live/", "/health/live"])
def test_liveness_answers_without_asking_any_dependency(probe, path, monkeypatch):
    for name in health.READINESS_CHECKS:
        monkeypatch.setitem(health.READINESS_CHECKS, name, lambda: pytest.fail("liveness asked a dependency"))
    response = probe(path)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/health/", "/health/ready/", "/health/ready", "/health"])
def test_readiness_passes_when_every_dependency_answers(probe, path, workers_alive):
    events = AuditEvent.objects.count()
    response = probe(path)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {
        "status": "ok",
        "failed": [],
        "checks": {"database": "ok", "broker": "ok", "storage": "ok", "workers": "ok"},
    }
    assert AuditEvent.objects.count() == events  # polled: no event per probe
    assert "sessionid" not in response.cookies and "Set-Cookie" not in response.headers


def test_readiness_fails_without_a_fresh_worker_heartbeat(probe):
    stale = timezone.now() - dt.timedelta(hours=1)
    WorkerHeartbeat.objects.create(node="celery@old", queues=["ingest"], pid=2, started_at=stale, beat_at=stale)
    response = probe("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail" and body["failed"] == ["workers"]
    queues = ", ".join(health.declared_queues())
    assert body["checks"]["workers"] == f"no worker with a fresh heartbeat for queue(s): {queues}"
    assert "celery@old" not in response.content.decode()  # no host names


def test_readiness_wants_each_queue_served(probe, settings):
    now = timezone.now()
    WorkerHeartbeat.objects.create(
        node="celery@ingest", queues=["ingest", "export"], pid=3, started_at=now, beat_at=now
    )
    settings.HEALTH_REQUIRED_QUEUES = ["ingest", "recon"]
    body = probe("/health/ready/").json()
    assert body["failed"] == ["workers"]
    assert body["checks"]["workers"] == "no worker with a fresh heartbeat for queue(s): recon"


def test_readiness_fails_on_a_database_error(probe, workers_alive, monkeypatch):
    def broken(*args, **kwargs):
        raise OperationalError("connection to server at 10.1.2.3 failed: password authentication failed")

    monkeypatch.setattr(health.connection, "cursor", broken)
    monkeypatch.setitem(health.READINESS_CHECKS, "workers", lambda: health.OK)  # reads the database too
    response = probe("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["database"] and body["checks"]["database"] == "unreachable (OperationalError)"
    assert "10.1.2.3" not in response.content.decode() and "password" not in response.content.decode()


def test_readiness_fails_when_the_broker_is_unreachable(probe, workers_alive, settings):
    settings.CELERY_BROKER_URL = "redis://:secret@127.0.0.1:1/0"  # nothing listens on port 1
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    response = probe("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"] and body["checks"]["broker"].startswith("unreachable (")
    assert "secret" not in response.content.decode()


def test_readiness_fails_when_the_filesystem_queue_folder_is_gone(probe, workers_alive, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path / "gone")}
    body = probe("/health/").json()
    assert body["failed"] == ["broker"] and body["checks"]["broker"] == "queue folder missing or not writable"


def test_readiness_fails_when_storage_is_not_writable(probe, workers_alive, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "no-such-volume"
    response = probe("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["storage"] and body["checks"]["storage"] == "MEDIA_ROOT not writable (FileNotFoundError)"


def test_storage_check_leaves_nothing_behind(settings):
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
    assert health.check_storage() == health.OK
    assert list(settings.MEDIA_ROOT.iterdir()) == []


def test_a_probe_is_get_or_head_only(probe):
    client = Client()
    response = client.post("/health/", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"


def test_production_settings_exempt_health_from_the_https_redirect(tmp_path):
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "MPI_ENV": "production",
        "SECRET_KEY": "s" * 60,
        "ALLOWED_HOSTS": "trials.example.org",
        "DATABASE_URL": "postgresql://mpi@db.example.org:5432/mpi",
        "CELERY_BROKER_URL": "redis://redis:6379/0",
        "AUDIT_HMAC_KEY": "k" * 40,
        "AUDIT_CHECKPOINT_DIR": str(tmp_path / "cp"),
        "MPI_VAR_DIR": str(tmp_path / "var"),
    }
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.SECURE_REDIRECT_EXEMPT, s.MIDDLEWARE[0], s.DATABASES['default']['CONN_MAX_AGE'],"
        " s.DATABASES['default']['CONN_HEALTH_CHECKS'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["['^health/']", "ops.middleware.HealthCheckMiddleware", "60", "True"]


def test_any_other_kombu_broker_is_asked_through_kombu(settings):
    settings.CELERY_BROKER_URL = "memory://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    assert health.check_broker() == health.OK
    from ops.queues import queue_depths

    depths = queue_depths()
    assert depths.problem == "" and depths.unacknowledged is None
    assert depths.depths == dict.fromkeys(health.declared_queues(), 0)


def test_the_sweeps_read_the_queues_they_name_or_none_without_a_broker(settings, caplog):
    from ops.queues import messages_waiting

    settings.CELERY_BROKER_URL = "memory://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    assert messages_waiting(["recon", "export"]) == {"recon": 0, "export": 0}
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    assert messages_waiting(["recon"]) is None
    assert "broker unavailable, queue depths unknown" in caplog.text
