"""Two workers get the same scan step (Celery delivers at least once, and the stalled-scan
sweep of two starting workers queues a step twice): the claim's conditional update, guarded
by the task's token, lets exactly one of them proceed. The other exits quietly and writes
nothing; only the holder's own redelivery (same task id) may take the claim up again."""

from __future__ import annotations

import threading

import pytest
from celery.app.task import Task
from django.db import connections

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.cache import SystemMatrixCache
from imaging.models import Reconstruction, Scan, ScanStatus
from imaging.services.scan_claims import scan_claim
from imaging.services.scan_steps import scan_reconstruct, scan_validate
from tests.imaging.helpers import uploaded_scan


@pytest.fixture
def no_broker(monkeypatch):
    """Tasks queued on commit are recorded, not published: these tests run the steps themselves."""
    sent = []
    monkeypatch.setattr(
        Task, "apply_async", lambda self, args=None, kwargs=None, **options: sent.append((self.name, tuple(args or ())))
    )
    return sent


def _row(scan_id: int) -> tuple:
    return Scan.objects.filter(pk=scan_id).values_list("status", "claim_token", "attempt").get()


def _claims(scan_id: int, to_status: str) -> list:
    return [
        e.changes["status"]
        for e in AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED, object_id=str(scan_id)).order_by(
            "sequence"
        )
        if e.changes["status"][1] == to_status
    ]


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_step_exactly_one_claims_it(api, pipeline, no_broker):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    barrier = threading.Barrier(2)
    won: dict[str, bool] = {}

    def worker(token: str) -> None:
        try:
            barrier.wait()
            won[token] = (
                scan_claim(
                    scan_id=scan.pk, from_status=ScanStatus.RECEIVED, to_status=ScanStatus.VALIDATING, token=token
                )
                is not None
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(token,)) for token in ("worker-a", "worker-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(won.values()) == [False, True], won
    (winner,) = [token for token, claimed in won.items() if claimed]
    assert _row(scan.pk) == (ScanStatus.VALIDATING, winner, 1)
    assert _claims(scan.pk, ScanStatus.VALIDATING) == [[ScanStatus.RECEIVED, ScanStatus.VALIDATING]]


@pytest.mark.parametrize("step", ["validate", "reconstruct"])
def test_a_second_worker_with_another_token_gets_nothing_and_writes_nothing(api, pipeline, no_broker, step):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    if step == "validate":
        from_status, to_status = ScanStatus.RECEIVED, ScanStatus.VALIDATING
        run = scan_validate
    else:
        assert scan_validate(scan_id=scan.pk, token="validator").status == ScanStatus.VALIDATED
        from_status, to_status = ScanStatus.VALIDATED, ScanStatus.RECONSTRUCTING

        def run(**kw):
            return scan_reconstruct(cache=SystemMatrixCache(10**9), **kw)

    # Worker A holds the claim (its step is under way, well within the visibility timeout).
    assert scan_claim(scan_id=scan.pk, from_status=from_status, to_status=to_status, token="worker-a")
    held, events = _row(scan.pk), AuditEvent.objects.count()

    # Worker B got the same step: it neither claims nor runs it.
    assert scan_claim(scan_id=scan.pk, from_status=from_status, to_status=to_status, token="worker-b") is None
    assert run(scan_id=scan.pk, token="worker-b") is None
    assert _row(scan.pk) == held == (to_status, "worker-a", held[2])
    assert AuditEvent.objects.count() == events
    assert not Reconstruction.objects.filter(scan=scan).exists()

    # Worker A's task redelivered (same task id) resumes its own claim and finishes the step.
    done = run(scan_id=scan.pk, token="worker-a")
    assert done is not None and done.status == (
        ScanStatus.VALIDATED if step == "validate" else ScanStatus.RECONSTRUCTED
    )
    assert _claims(scan.pk, to_status) == [[from_status, to_status], [to_status, to_status]]
