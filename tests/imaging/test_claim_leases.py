"""Issue #17: a running scan step renews its claim's lease (a heartbeat thread beside the
task), so a step that runs longer than the lease keeps its scan, while a claim nobody renews
is swept by beat's periodic sweep (``tasks.sweep_stalled_work``) once the lease runs out,
whatever the broker's visibility timeout."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from celery.app.task import Task
from django.utils import timezone

from imaging import processing, tasks
from imaging.models import Reconstruction, Scan, ScanStatus
from imaging.services.scan_claims import scan_claim, stalled_scans
from imaging.services.scan_steps import scan_validate
from outbox.models import OutboxMessage
from tests.imaging.helpers import uploaded_scan

LEASE = 2  # seconds: the heartbeat renews every LEASE / 4


@pytest.fixture
def queued(monkeypatch):
    sent = []
    monkeypatch.setattr(
        Task, "apply_async", lambda self, args=None, kwargs=None, **options: sent.append((self.name, tuple(args or ())))
    )
    return sent


@pytest.mark.django_db(transaction=True)
def test_a_step_longer_than_its_lease_keeps_its_claim(api, pipeline, settings, monkeypatch, queued):
    settings.IMAGING_CLAIM_LEASE_SECONDS = LEASE
    settings.CELERY_VISIBILITY_TIMEOUT = 3600
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan_validate(scan_id=scan.pk, token="validator").status == ScanStatus.VALIDATED
    seen = {}
    reconstruct = processing.reconstruct

    def slow(*args, **kwargs):  # numerics with no progress report for longer than the lease
        time.sleep(LEASE * 2)
        row = Scan.objects.get(pk=scan.pk)
        seen["age"] = (timezone.now() - row.claimed_at).total_seconds()
        seen["stalled"] = stalled_scans()
        seen["stolen"] = scan_claim(
            scan_id=scan.pk, from_status=ScanStatus.VALIDATED, to_status=ScanStatus.RECONSTRUCTING, token="thief"
        )
        return reconstruct(*args, **kwargs)

    monkeypatch.setattr(processing, "reconstruct", slow)
    tasks.reconstruct_scan.apply(args=[scan.pk], task_id="the-worker")

    assert seen["age"] < LEASE and seen["stalled"] == [] and seen["stolen"] is None
    scan.refresh_from_db()
    assert scan.status == ScanStatus.RECONSTRUCTED and scan.claim_token == "the-worker"
    assert scan.attempt == 2  # one claim to validate, one to reconstruct: no second
    assert Reconstruction.objects.filter(scan=scan).count() == 1
    # The next step was recorded with the reconstruction and sent after its commit.
    assert ("imaging.quantify_scan", (scan.pk,)) in queued


@pytest.mark.django_db(transaction=True)
def test_the_periodic_sweep_requeues_an_expired_claim_and_only_lost_unclaimed_work(
    api, pipeline, settings, monkeypatch, queued
):
    settings.IMAGING_CLAIM_LEASE_SECONDS = LEASE
    settings.CELERY_VISIBILITY_TIMEOUT = 3600
    dead = uploaded_scan(api, pipeline, pipeline.sim["measurement"], hours=24)
    assert scan_claim(scan_id=dead.pk, from_status="received", to_status="validating", token="dead-host")
    past = timezone.now() - dt.timedelta(seconds=LEASE + 1)
    Scan.objects.filter(pk=dead.pk).update(claimed_at=past, updated_at=past)
    OutboxMessage.objects.update(created_at=past)  # its first message went long ago
    depths = {"ingest": 3, "recon": 0, "quant": 0, "export": 0}
    monkeypatch.setattr(tasks, "messages_waiting", lambda names: depths)
    queued.clear()

    tasks.sweep_stalled_work.apply()
    assert queued == [("imaging.validate_scan", (dead.pk,))]  # the lease, not the busy queue, decides
    tasks.sweep_stalled_work.apply()
    assert queued == [("imaging.validate_scan", (dead.pk,))]  # not twice within a lease

    monkeypatch.setattr(tasks, "messages_waiting", lambda names: None)  # the broker away: claims still swept
    Scan.objects.filter(pk=dead.pk).update(claimed_at=past)
    OutboxMessage.objects.update(created_at=past)
    tasks.sweep_stalled_work.apply()
    assert queued[-1] == ("imaging.validate_scan", (dead.pk,)) and len(queued) == 2
