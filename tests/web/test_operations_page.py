"""The operations page (issue #17): queue depths, stalled work, worker heartbeats and
the audit checkpoint state, for platform administrators only."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event, write_checkpoint
from audit.models import AuditEvent
from compliance.models import Export
from imaging.models import Scan
from ops.health import declared_queues
from ops.models import WorkerHeartbeat
from tests import factories as f
from tests.web.scans import scans_at

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin():
    return f.UserFactory(username="root", is_staff=True, is_superuser=True)


def _event(actor):
    with transaction.atomic():
        record_event(actor=actor, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=1)


def _filesystem_broker(settings, folder, messages: dict[str, int]) -> None:
    """The embedded broker on a folder of its own, holding ``messages`` per queue."""
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True)
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }
    for queue, count in messages.items():
        for n in range(count):
            (folder / "queue" / f"{1000 + n}_{uuid.uuid4()}.{queue}.msg").write_text("{}")


def test_it_shows_queues_stalled_scans_heartbeats_and_checkpoints(browser_client, admin, site_a, settings, tmp_path):
    settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
    _filesystem_broker(settings, tmp_path / "broker", {"recon": 2, "ingest": 1})
    now = timezone.now()
    long_ago = now - dt.timedelta(hours=2)
    WorkerHeartbeat.objects.create(node="celery@recon-1", queues=["recon"], pid=41, started_at=long_ago, beat_at=now)
    WorkerHeartbeat.objects.create(
        node="celery@ingest-9", queues=["ingest", "export"], pid=7, started_at=long_ago, beat_at=long_ago
    )
    [stuck] = scans_at(site_a, 1, status=Scan.Status.RECONSTRUCTING)
    Scan.objects.filter(pk=stuck.pk).update(claimed_at=long_ago, claim_token="t", attempt=1)
    [busy] = scans_at(site_a, 1, status=Scan.Status.RECONSTRUCTING)
    Scan.objects.filter(pk=busy.pk).update(claimed_at=now, claim_token="u", attempt=1)  # its lease is young
    running = dict(kind=Export.Kind.AUDIT_JSON, trial=site_a.trial, requested_by=admin, status=Export.Status.RUNNING)
    dead_export = Export.objects.create(**running, claim_token="gone", claimed_at=long_ago)
    live_export = Export.objects.create(**running, claim_token="here", claimed_at=now)
    _event(admin)
    write_checkpoint()
    _event(admin)

    response = browser_client(admin).get("/operations/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-queue="recon">2<' in html and 'data-queue="ingest">1<' in html and 'data-queue="export">0<' in html
    assert f'data-stalled-scan="{stuck.pk}"' in html and f'data-stalled-scan="{busy.pk}"' not in html
    assert "celery@recon-1" in html and "celery@ingest-9" in html
    assert f"Stalled exports (lease run out, or message lost): #{dead_export.pk}<" in html
    assert f"#{live_export.pk}" not in html
    assert html.count(">alive<") == 1 and html.count(">stale<") == 1
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()  # sign-in adds events
    assert f"event #{head}<" in html and "event #1," in html and f"data-events-since>{head - 1}<" in html
    unserved = ", ".join(q for q in declared_queues() if q != "recon")
    assert f'data-check="workers">no worker with a fresh heartbeat for queue(s): {unserved}<' in html
    assert stuck.subject.code not in html  # machine state only


def test_it_says_when_the_broker_cannot_be_asked(browser_client, admin, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    response = browser_client(admin).get("/operations/")
    assert response.status_code == 200
    assert "the broker could not be asked (" in response.content.decode()


@pytest.mark.parametrize("who", ["coordinator_a", "auditor", "staff"])
def test_it_is_for_superusers_only(browser_client, request, who):
    user = f.UserFactory(username="staffer", is_staff=True) if who == "staff" else request.getfixturevalue(who)
    assert browser_client(user).get("/operations/").status_code == 404


def test_it_sends_an_anonymous_browser_to_sign_in(client):
    response = client.get("/operations/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
