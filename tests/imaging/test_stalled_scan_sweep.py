"""The stalled-scan sweep (``tasks.recover_stalled_scans``, run by the worker_ready hook and
periodically by beat, ``tasks.sweep_stalled_work``): a scan claimed by a worker that died
stops renewing its lease, and the sweep queues its step again, whatever the broker's
visibility timeout. A claim whose lease ran out is requeued (once, not by every sweep) and
the scan then completes exactly once; a fresh claim and the final states are left alone;
unclaimed work is requeued only while its queue on the broker stands empty."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from celery.app.task import Task
from celery.signals import worker_ready
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import tasks
from imaging.models import Measurement, Reconstruction, Scan, ScanStatus
from imaging.services.scan_claims import scan_claim
from imaging.services.scan_steps import scan_validate
from outbox.models import OutboxMessage
from tests.imaging.helpers import process, uploaded_scan

STEPS = {"validate": tasks.validate_scan, "reconstruct": tasks.reconstruct_scan, "quantify": tasks.quantify_scan}
_STEP_OF = {task.name: step for step, task in STEPS.items()}


@pytest.fixture
def queued(monkeypatch):
    """The steps queued (by the sweep, or by a task on commit), in order: (step, scan id)."""
    steps = []
    monkeypatch.setattr(
        Task,
        "apply_async",
        lambda self, args=None, kwargs=None, **options: steps.append((_STEP_OF[self.name], args[0])),
    )
    return steps


def drain(queued, capture) -> list[str]:
    """Run the queued tasks here as a worker would, each under a new task id, until none is left."""
    ran = []
    while queued:
        step, scan_id = queued.pop(0)
        with capture(execute=True):
            STEPS[step].apply(args=[scan_id], task_id=f"task-{uuid.uuid4().hex}")
        ran.append(step)
    return ran


def age(scan: Scan, seconds: float) -> None:
    """The scan untouched for ``seconds``; what was queued for it, handed to the broker then."""
    past = timezone.now() - dt.timedelta(seconds=seconds)
    Scan.objects.filter(pk=scan.pk).update(claimed_at=past, updated_at=past)
    OutboxMessage.objects.update(created_at=past, sent_at=past)


def sweep(capture, **kwargs) -> list[int]:
    """The sweep, and the outbox relay after its commit: what it queued lands in ``queued``."""
    kwargs.setdefault("depths", {"ingest": 0, "recon": 0, "quant": 0})  # the broker's queues empty
    with capture(execute=True):
        return tasks.recover_stalled_scans(**kwargs)


def claim_and_die(scan: Scan, from_status: str, to_status: str, *, seconds_ago: float) -> None:
    """A worker claims the step, then is killed (SIGKILL: nothing after the claim runs)."""
    assert scan_claim(scan_id=scan.pk, from_status=from_status, to_status=to_status, token="dead-worker")
    age(scan, seconds_ago)


class _FakeTimer:
    def call_repeatedly(self, seconds, fun, args=(), kwargs=None, priority=0):
        return None


class FakeConsumer:
    """What a worker passes as the worker_ready sender (its consumer), reduced to what the
    project's handlers read: its name, its queues and its timer (ops.heartbeat)."""

    hostname = "fake@worker"
    timer = _FakeTimer()
    task_consumer = type("TaskConsumer", (), {"queues": ()})()


def _snapshot(scan_id: int) -> tuple:
    return (
        Scan.objects.filter(pk=scan_id)
        .values_list("status", "attempt", "claim_token", "claimed_at", "updated_at")
        .get()
    )


@pytest.mark.parametrize("claimed, step", [("validating", "validate"), ("reconstructing", "reconstruct")])
def test_a_claim_whose_lease_ran_out_is_requeued_once_and_completes_once(
    api, pipeline, settings, queued, django_capture_on_commit_callbacks, claimed, step
):
    settings.CELERY_VISIBILITY_TIMEOUT = 3600  # the broker would wait an hour: the lease does not
    lease = settings.IMAGING_CLAIM_LEASE_SECONDS
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    if claimed == "reconstructing":
        assert scan_validate(scan_id=scan.pk, token="validator").status == ScanStatus.VALIDATED
        claim_and_die(scan, ScanStatus.VALIDATED, ScanStatus.RECONSTRUCTING, seconds_ago=lease + 5)
    else:
        claim_and_die(scan, ScanStatus.RECEIVED, ScanStatus.VALIDATING, seconds_ago=lease + 5)
    queued.clear()

    # Two sweeps at about the same time (beat's, a starting worker's): the step is queued once.
    capture = django_capture_on_commit_callbacks
    assert sweep(capture) == [scan.pk]
    assert sweep(capture) == []
    assert sweep(capture, depths={"ingest": 5, "recon": 5, "quant": 5}) == []  # periodic, queues busy
    assert queued == [(step, scan.pk)]

    ran = drain(queued, django_capture_on_commit_callbacks)
    assert "quantify" in ran
    scan.refresh_from_db()
    assert scan.status == ScanStatus.QUANTIFIED, scan.status_reason
    assert scan.claim_token != "dead-worker"
    (reconstruction,) = Reconstruction.objects.filter(scan=scan)
    measurements = Measurement.objects.filter(scan=scan)
    assert measurements.count() == len(pipeline.sim["truth"])
    assert set(measurements.values_list("reconstruction", flat=True)) == {reconstruction.pk}
    events = AuditEvent.objects.filter(subject_id=pipeline.subject.pk)
    assert events.filter(action=AuditAction.RECONSTRUCTION_COMPLETED).count() == 1
    assert events.filter(action=AuditAction.METRICS_RECORDED).count() == 1
    claims = [
        (e.changes["status"], e.reason)
        for e in events.filter(action=AuditAction.SCAN_STATUS_CHANGED, object_id=str(scan.pk)).order_by("sequence")
        if e.changes["status"][1] == claimed
    ]
    assert [c[0] for c in claims][-1] == [claimed, claimed] and "claimed again" in claims[-1][1]

    # Done: a later sweep finds nothing to do.
    age(scan, lease * 100)
    assert sweep(capture) == [] and queued == []


@pytest.mark.parametrize("claimed", ["validating", "reconstructing"])
def test_a_fresh_claim_is_left_to_its_worker(
    api, pipeline, settings, queued, claimed, django_capture_on_commit_callbacks
):
    lease = settings.IMAGING_CLAIM_LEASE_SECONDS
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    if claimed == "reconstructing":
        scan_validate(scan_id=scan.pk, token="validator")
        claim_and_die(scan, ScanStatus.VALIDATED, ScanStatus.RECONSTRUCTING, seconds_ago=lease - 30)
    else:
        claim_and_die(scan, ScanStatus.RECEIVED, ScanStatus.VALIDATING, seconds_ago=lease - 30)
    queued.clear()
    before, events = _snapshot(scan.pk), AuditEvent.objects.count()

    assert sweep(django_capture_on_commit_callbacks) == []
    assert queued == [] and _snapshot(scan.pk) == before and AuditEvent.objects.count() == events
    # The live worker's claim still holds against another task of the same step.
    from_status = ScanStatus.VALIDATED if claimed == "reconstructing" else ScanStatus.RECEIVED
    assert scan_claim(scan_id=scan.pk, from_status=from_status, to_status=claimed, token="other") is None


def test_a_scan_waiting_in_a_queue_is_requeued_only_when_quiet_for_a_minute(
    api, pipeline, queued, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan.status == ScanStatus.RECEIVED
    assert sweep(capture) == []  # just uploaded: its validate task is on its way
    age(scan, 61)
    assert sweep(capture) == [scan.pk] and queued == [("validate", scan.pk)]


def test_the_periodic_sweep_requeues_unclaimed_work_only_while_its_queue_is_empty(
    api, pipeline, queued, django_capture_on_commit_callbacks
):
    """A validated scan quiet for minutes behind a backlog of reconstructions is waiting its
    turn: queueing it again every minute would pile duplicates into the recon queue. With the
    queue empty, its message was lost (a broker restarted without persistence)."""
    capture = django_capture_on_commit_callbacks
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan_validate(scan_id=scan.pk, token="validator").status == ScanStatus.VALIDATED
    age(scan, 600)
    queued.clear()
    assert sweep(capture, depths={"ingest": 0, "recon": 12, "quant": 0}) == []
    assert sweep(capture, depths=None) == []  # the broker is away: nothing known
    assert sweep(capture, depths={"ingest": 0, "recon": 0, "quant": 0}) == [scan.pk]
    assert queued == [("reconstruct", scan.pk)]


@pytest.mark.parametrize("final", [ScanStatus.QUANTIFIED, ScanStatus.REJECTED, ScanStatus.FAILED])
def test_scans_in_a_final_state_are_untouched(
    api, pipeline, settings, queued, final, django_capture_on_commit_callbacks
):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    assert scan.status == ScanStatus.QUANTIFIED
    Scan.objects.filter(pk=scan.pk).update(status=final)
    age(scan, settings.CELERY_VISIBILITY_TIMEOUT * 10)
    queued.clear()
    before, events = _snapshot(scan.pk), AuditEvent.objects.count()

    assert sweep(django_capture_on_commit_callbacks) == []
    assert queued == [] and _snapshot(scan.pk) == before and AuditEvent.objects.count() == events


def test_the_worker_ready_signal_runs_the_sweep(
    api, pipeline, settings, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        Task, "apply_async", lambda self, args=None, kwargs=None, **options: sent.append((self.name, tuple(args or ())))
    )
    # The worker's heartbeat (ops.heartbeat, the other worker_ready handler) closes its
    # database connection after each beat: here that is the test's own connection.
    monkeypatch.setattr("ops.heartbeat.beat", lambda *args: None)
    stalled = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    claim_and_die(
        stalled, ScanStatus.RECEIVED, ScanStatus.VALIDATING, seconds_ago=settings.IMAGING_CLAIM_LEASE_SECONDS + 5
    )
    sent.clear()

    with django_capture_on_commit_callbacks(execute=True):
        responses = worker_ready.send(sender=FakeConsumer())
    assert sent == [("imaging.validate_scan", (stalled.pk,))]
    assert not [r for _, r in responses if isinstance(r, Exception)]


def test_a_failing_sweep_does_not_keep_the_worker_from_starting(monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr(tasks, "recover_stalled_scans", broken)
    tasks._recover_on_start(sender=FakeConsumer())  # no exception
    assert "recovering stalled scans failed" in caplog.text
