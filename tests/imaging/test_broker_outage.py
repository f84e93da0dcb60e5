"""Issue #17: a broker outage at any step of the scan pipeline delays the scan, never fails
it. Each step records the next one in the transaction that finishes it (the outbox); the
publish fails with the broker away (kombu's OperationalError, as Redis down raises it); the
scan keeps its status, and once the broker is back the relay delivers the step and the scan
ends ``quantified`` with one reconstruction and one set of metrics. Completing an upload
while the broker is away answers with the scan id, never a 500."""

from __future__ import annotations

import uuid

import kombu.exceptions
import pytest
from celery.app.task import Task
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import tasks
from imaging.models import Measurement, Reconstruction, Scan, ScanStatus
from outbox.models import OutboxMessage
from outbox.tasks import relay_due
from tests.imaging import tus

TASKS = {t.name: t for t in (tasks.validate_scan, tasks.reconstruct_scan, tasks.quantify_scan)}


class Broker:
    """``Task.apply_async`` replaced: queued tasks recorded while up; while down, the publish
    raises as kombu does when Redis refuses the connection."""

    def __init__(self):
        self.up = True
        self.queued: list[tuple[str, tuple]] = []
        self.refused = 0

    def publish(self, task, args=None, kwargs=None, **options):
        if not self.up:
            self.refused += 1
            raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.queued.append((task.name, tuple(args or ())))


@pytest.fixture
def broker(monkeypatch):
    fake = Broker()
    monkeypatch.setattr(Task, "apply_async", lambda self, *a, **kw: fake.publish(self, *a, **kw))
    return fake


def back_up(broker: Broker, capture) -> None:
    """The broker returns; beat's relay runs (its backoff over)."""
    broker.up = True
    OutboxMessage.objects.filter(sent_at__isnull=True).update(due_at=timezone.now())
    with capture(execute=True):
        relay_due.apply()


def assert_held_for_later(scan_id: int, status: str, broker: Broker) -> None:
    scan = Scan.objects.get(pk=scan_id)
    assert scan.status == status and not scan.status_reason, (scan.status, scan.status_reason)
    pending = OutboxMessage.objects.filter(sent_at__isnull=True)
    assert pending.count() == 1 and "OperationalError" in pending.get().last_error
    assert broker.refused >= 1


def assert_quantified_once(scan_id: int, pipeline) -> None:
    scan = Scan.objects.get(pk=scan_id)
    assert scan.status == ScanStatus.QUANTIFIED, scan.status_reason
    assert Reconstruction.objects.filter(scan=scan).count() == 1
    assert Measurement.objects.filter(scan=scan).count() == len(pipeline.sim["truth"])
    events = AuditEvent.objects.filter(object_type="imaging.reconstruction", subject_id=scan.subject_id)
    assert events.filter(action=AuditAction.RECONSTRUCTION_COMPLETED).count() == 1
    assert events.filter(action=AuditAction.METRICS_RECORDED).count() == 1
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()


@pytest.mark.parametrize(
    "down_during, held_in",
    [
        ("upload", ScanStatus.RECEIVED),
        ("imaging.validate_scan", ScanStatus.VALIDATED),
        ("imaging.reconstruct_scan", ScanStatus.RECONSTRUCTED),
    ],
)
def test_a_broker_outage_at_each_step_delays_the_scan_and_it_is_quantified_once(
    api, pipeline, broker, django_capture_on_commit_callbacks, down_during, held_in
):
    capture = django_capture_on_commit_callbacks
    broker.up = down_during != "upload"
    with capture(execute=True):
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
    assert last.status_code == 204 and last["Scan-Id"], last.content  # the scan id, not a 500
    scan_id = int(last["Scan-Id"])
    if down_during == "upload":
        assert_held_for_later(scan_id, held_in, broker)
        back_up(broker, capture)

    while broker.queued:
        name, args = broker.queued.pop(0)
        if name == down_during:
            broker.up = False
        with capture(execute=True):
            TASKS[name].apply(args=list(args), task_id=f"task-{uuid.uuid4().hex}")
        if not broker.up:
            assert_held_for_later(scan_id, held_in, broker)
            # The periodic sweep meanwhile finds the step pending in the outbox: nothing twice.
            assert tasks.recover_stalled_scans(depths={"ingest": 0, "recon": 0, "quant": 0}) == []
            back_up(broker, capture)
    assert_quantified_once(scan_id, pipeline)


def test_a_retry_while_the_broker_is_away_is_delivered_when_it_returns(
    api, pipeline, broker, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    with capture(execute=True):
        _, last = tus.upload_file(api(pipeline.user), pipeline.sim["measurement"], pipeline=pipeline, hours=48)
    scan_id = int(last["Scan-Id"])
    Scan.objects.filter(pk=scan_id).update(status=ScanStatus.FAILED, retryable=True, status_reason="timeout")
    broker.queued.clear()
    broker.up = False
    with capture(execute=True):
        response = api(pipeline.user).post(f"/api/v1/scans/{scan_id}/retry/")
    assert response.status_code == 200 and response.json()["status"] == ScanStatus.RECEIVED
    assert broker.queued == []
    back_up(broker, capture)
    assert broker.queued == [("imaging.validate_scan", (scan_id,))]
