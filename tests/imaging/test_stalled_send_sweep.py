"""PACS sends whose worker died mid-send. A redelivered task must not find the row
``running`` and give up (the send would stay ``running`` for ever): a claim older than
the visibility timeout is taken over as a new attempt, the worker start-up sweep queues
such sends again (the filesystem broker has no redelivery), and an attempt that outlived
its lease can no longer write the row or the audit trail."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import pacs, tasks
from imaging.dicom.send import ObjectStatus, SendResult
from imaging.models import DicomSend
from tests.imaging.dicom_cases import quantified  # noqa: F401 - fixture


@pytest.fixture
def delivered(monkeypatch):
    """The PACS, reduced to what it stored: one list entry per delivery."""
    deliveries = []

    def deliver(destination, datasets):
        deliveries.append(len(datasets))
        return SendResult(
            destination.describe(),
            tuple(ObjectStatus(str(d.SOPClassUID), str(d.SOPInstanceUID), True, 0) for d in datasets),
        )

    monkeypatch.setattr(pacs, "_deliver", deliver)
    return deliveries


@pytest.fixture
def enqueued(monkeypatch):
    """The sends recorded for delivery (through the outbox, ``tasks.enqueue``)."""
    sends = []

    def record(task, args=(), **options):
        assert task == "imaging.send_dicom" and options.get("queue") == "export"
        sends.append(args[0])
        return sends

    monkeypatch.setattr(tasks, "enqueue", record)
    return sends


@pytest.fixture
def send(quantified, coordinator_a, enqueued):  # noqa: F811
    destination = pacs.pacs_destination_register(
        actor=None,
        trial=quantified.subject.trial,
        name="Archive",
        protocol="dicomweb",
        base_url="http://pacs.invalid/dicom-web",
    )
    requested = pacs.dicom_send_request(actor=coordinator_a, scan=quantified, destination=destination)
    enqueued.clear()
    return requested


def claim_and_die(send: DicomSend, *, seconds_ago: float) -> None:
    """A worker claims the send, then is killed (SIGKILL: nothing after the claim runs)."""
    assert pacs._claim(send.pk)
    DicomSend.objects.filter(pk=send.pk).update(started_at=timezone.now() - dt.timedelta(seconds=seconds_ago))


def events(send: DicomSend, action: str) -> int:
    return AuditEvent.objects.filter(object_type="imaging.dicomsend", object_id=str(send.pk), action=action).count()


def test_a_send_whose_worker_died_is_swept_taken_over_and_audited_once(send, settings, enqueued, delivered):
    claim_and_die(send, seconds_ago=settings.CELERY_VISIBILITY_TIMEOUT + 5)
    assert tasks.recover_stalled_sends() == [send.pk]
    assert enqueued == [send.pk]

    result = pacs.dicom_send_run(send.pk)
    assert result is not None and result.status == "sent"
    assert result.attempts == 2 and len(delivered) == 1
    assert all(o["ok"] for o in result.object_statuses) and len(result.object_statuses) == delivered[0]
    assert events(send, AuditAction.DICOM_SENT) == 1


def test_a_fresh_claim_is_left_to_its_worker(send, enqueued, delivered):
    claim_and_die(send, seconds_ago=1)
    before = DicomSend.objects.filter(pk=send.pk).values().get()
    assert tasks.recover_stalled_sends() == [] and enqueued == []
    assert pacs.dicom_send_run(send.pk) is None  # the redelivered task leaves it alone
    assert DicomSend.objects.filter(pk=send.pk).values().get() == before and delivered == []


def test_only_sends_that_lost_their_task_are_queued_again(send, enqueued):
    minute_ago = timezone.now() - dt.timedelta(seconds=61)
    DicomSend.objects.filter(pk=send.pk).update(created_at=minute_ago)
    assert tasks.recover_stalled_sends() == [send.pk]  # queued, never tried: its message was lost
    enqueued.clear()
    DicomSend.objects.filter(pk=send.pk).update(attempts=1)  # waiting for a retry: its task holds the countdown
    assert tasks.recover_stalled_sends() == []
    for final in ("sent", "failed"):
        DicomSend.objects.filter(pk=send.pk).update(status=final, started_at=minute_ago)
        assert tasks.recover_stalled_sends() == []
    assert enqueued == []


def test_an_attempt_that_outlived_its_lease_cannot_write_the_row(send, settings, monkeypatch):
    """Attempt 1 hangs in the network past the lease; attempt 2 takes over and finishes.
    When attempt 1 comes back, its result must not replace attempt 2's or be audited."""
    outcomes, calls = [], []

    def deliver(destination, datasets):
        calls.append(destination)
        if len(calls) == 1:  # attempt 1, stuck until the lease is over
            DicomSend.objects.filter(pk=send.pk).update(
                started_at=timezone.now() - dt.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT + 5)
            )
            outcomes.append(("attempt 2", pacs.dicom_send_run(send.pk)))
            return SendResult(destination.describe(), (ObjectStatus("1.2", "9.9", False, 0xA700, "late"),))
        return SendResult(
            destination.describe(),
            tuple(ObjectStatus(str(d.SOPClassUID), str(d.SOPInstanceUID), True, 0) for d in datasets),
        )

    monkeypatch.setattr(pacs, "_deliver", deliver)
    outcomes.append(("attempt 1", pacs.dicom_send_run(send.pk)))

    assert [name for name, _ in outcomes] == ["attempt 2", "attempt 1"]
    assert outcomes[0][1].status == "sent" and outcomes[1][1] is None
    row = DicomSend.objects.get(pk=send.pk)
    assert row.status == "sent" and row.attempts == 2 and all(o["ok"] for o in row.object_statuses)
    assert events(send, AuditAction.DICOM_SENT) == 1 and events(send, AuditAction.DICOM_SEND_FAILED) == 0


def test_the_worker_start_up_sweeps_sends_even_when_the_scan_sweep_fails(send, settings, enqueued, monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr(tasks, "recover_stalled_scans", broken)
    claim_and_die(send, seconds_ago=settings.CELERY_VISIBILITY_TIMEOUT + 5)
    with caplog.at_level(logging.INFO, logger="imaging.tasks"):
        tasks._recover_on_start(sender=None)
    assert enqueued == [send.pk]
    assert "recovering stalled scans failed" in caplog.text
    assert f"requeued stalled PACS sends [{send.pk}]" in caplog.text


def test_while_the_new_attempt_runs_only_it_holds_the_row(send, settings):
    """Both attempts are ``running`` now: the status alone cannot tell them apart."""
    claim_and_die(send, seconds_ago=settings.CELERY_VISIBILITY_TIMEOUT + 5)
    old = DicomSend.objects.get(pk=send.pk)
    assert pacs._claim(send.pk)
    new = DicomSend.objects.get(pk=send.pk)
    assert (old.status, old.attempts, new.status, new.attempts) == ("running", 1, "running", 2)
    assert not pacs._mine(old).exists()
    assert pacs._mine(new).exists()
