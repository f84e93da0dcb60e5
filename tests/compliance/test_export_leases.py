"""Issue #17: an export build holds a lease its heartbeat renews; a dead worker's build is
taken over once its lease runs out (``compliance.tasks.sweep_stalled_exports``, Celery beat),
and a lost message of a queued export is queued again while the export queue stands empty.
The build completes exactly once (one ready row, one EXPORT_COMPLETED event), and a worker
that outlived its lease writes nothing."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from celery.app.task import Task

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance import reports, tasks
from compliance.models import Export
from compliance.services.exports import export_renew_claim, export_request, export_run, stalled_exports
from outbox.models import OutboxMessage


@pytest.fixture
def queued(monkeypatch):
    """Export builds handed to the broker, in order (export ids)."""
    sent: list[int] = []
    monkeypatch.setattr(
        Task, "apply_async", lambda self, args=None, kwargs=None, **options: sent.append((self.name, args[0]))
    )
    return sent


@pytest.fixture
def export(auditor, trial, visit):
    return export_request(actor=auditor, kind=Export.Kind.AUDIT_JSON, trial=trial)


def _completed(export):
    return AuditEvent.objects.filter(
        action=AuditAction.EXPORT_COMPLETED, object_type="compliance.export", object_id=str(export.pk)
    )


def _dead_worker_holds(export, *, seconds_ago: float, token: str = "dead-worker"):
    """The row as a worker left it when it died mid-build ``seconds_ago`` after its last renewal."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    Export.objects.filter(pk=export.pk).update(
        status=Export.Status.RUNNING, claim_token=token, claimed_at=at, started_at=at
    )


def test_a_build_whose_lease_ran_out_is_requeued_once_and_completes_once(
    export, queued, settings, django_capture_on_commit_callbacks
):
    settings.EXPORT_CLAIM_LEASE_SECONDS = 60
    _dead_worker_holds(export, seconds_ago=61)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recover_stalled_exports(queue_idle=False) == [export.pk]
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recover_stalled_exports(queue_idle=False) == []  # not queued by every sweep
    assert queued == [("compliance.run_export", export.pk)]
    assert OutboxMessage.objects.filter(task="compliance.run_export", args=[export.pk]).count() == 1

    done = export_run(export.pk, token="new-worker")
    assert done.status == Export.Status.READY and done.claim_token == "new-worker"
    assert _completed(export).count() == 1
    assert export_run(export.pk, token="third") is None  # done: nothing claimed again
    assert _completed(export).count() == 1


def test_a_fresh_claim_is_left_to_its_worker(export, queued, settings):
    settings.EXPORT_CLAIM_LEASE_SECONDS = 60
    _dead_worker_holds(export, seconds_ago=30)
    assert stalled_exports(queue_idle=True) == []
    assert export_run(export.pk, token="another-worker") is None
    export.refresh_from_db()
    assert export.status == Export.Status.RUNNING and export.claim_token == "dead-worker"
    assert not _completed(export).exists()


def test_a_worker_that_outlived_its_lease_writes_nothing(export, monkeypatch, settings):
    """The first worker stalls past its lease; a second one takes the build over and
    finishes; when the first wakes up, its result is discarded (row and audit untouched)."""
    settings.EXPORT_CLAIM_LEASE_SECONDS = 60
    original = reports.BUILDERS[Export.Kind.AUDIT_JSON]

    def slow_then_overtaken(exp):
        if Export.objects.get(pk=exp.pk).claim_token == "first":
            _dead_worker_holds(exp, seconds_ago=61, token="first")  # its lease ran out meanwhile
            assert export_run(exp.pk, token="second").status == Export.Status.READY
        return original[0](exp)

    monkeypatch.setitem(reports.BUILDERS, Export.Kind.AUDIT_JSON, (slow_then_overtaken, *original[1:]))
    assert export_run(export.pk, token="first") is None
    export.refresh_from_db()
    assert export.status == Export.Status.READY and export.claim_token == "second"
    assert _completed(export).count() == 1


def test_a_queued_export_whose_message_was_lost_is_requeued_only_while_its_queue_is_empty(
    export, queued, settings, django_capture_on_commit_callbacks
):
    settings.IMAGING_LOST_MESSAGE_QUIET_SECONDS = 60
    Export.objects.filter(pk=export.pk).update(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61))
    OutboxMessage.objects.all().delete()  # the request's own message is gone with the broker
    assert stalled_exports(queue_idle=False) == []  # it may be waiting behind others
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.recover_stalled_exports(queue_idle=True) == [export.pk]
    assert queued == [("compliance.run_export", export.pk)]


def test_final_states_are_untouched(export, settings):
    settings.EXPORT_CLAIM_LEASE_SECONDS = 2
    settings.IMAGING_LOST_MESSAGE_QUIET_SECONDS = 1
    export_run(export.pk, token="t")
    Export.objects.filter(pk=export.pk).update(
        claimed_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    assert stalled_exports(queue_idle=True) == []


def test_the_task_builds_under_a_heartbeat_that_renews_its_own_claim(export, monkeypatch, settings):
    """``run_export`` wraps the build in ``ops.leases.renewing`` (every quarter of the lease);
    its renewal moves the claim's time forward for this task's token only."""
    settings.EXPORT_CLAIM_LEASE_SECONDS = 8
    seen = {}
    real = tasks.renewing

    def spy(renew, *, interval, name):
        seen.update(renew=renew, interval=interval, name=name)
        return real(renew, interval=interval, name=name)

    def build_and_renew(exp):
        before = Export.objects.get(pk=exp.pk).claimed_at
        time.sleep(0.01)
        assert seen["renew"]() is True
        assert Export.objects.get(pk=exp.pk).claimed_at > before
        return original[0](exp)

    original = reports.BUILDERS[Export.Kind.AUDIT_JSON]
    monkeypatch.setattr(tasks, "renewing", spy)
    monkeypatch.setitem(reports.BUILDERS, Export.Kind.AUDIT_JSON, (build_and_renew, *original[1:]))
    assert tasks.run_export.apply(args=[export.pk], task_id="task-1").get() == Export.Status.READY
    assert seen["interval"] == 2 and seen["name"] == f"export-{export.pk}-lease"
    assert seen["renew"]() is False  # done: the claim is no longer a running build's


def test_renewal_stops_once_the_claim_is_not_ours(export):
    _dead_worker_holds(export, seconds_ago=0, token="mine")
    assert export_renew_claim(export_id=export.pk, token="mine") is True
    assert export_renew_claim(export_id=export.pk, token="someone-else") is False


def test_beat_runs_the_export_sweep(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-stalled-exports"]
    assert entry["task"] == tasks.sweep_stalled_exports.name
