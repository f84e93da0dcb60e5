"""How a scan task ends when its step does not: past the soft time limit, on transient
errors (retried, then failed as retryable), killed at the hard limit; and what a final
status queues (nothing)."""

from __future__ import annotations

import pytest
from celery.app.task import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from imaging import processing
from imaging.models import Scan, ScanStatus

# The task functions and the services they call, in one place (imaging.services may become a package).
from imaging.services.scan_claims import scan_claim
from imaging.services.scan_steps import scan_validate
from imaging.tasks import queue_next_step, reconstruct_scan, validate_scan
from tests.imaging.helpers import uploaded_scan

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    """Every task queued (``delay`` / ``apply_async``): its name and arguments."""
    queued = []
    monkeypatch.setattr(
        Task,
        "apply_async",
        lambda self, args=None, kwargs=None, **options: queued.append((self.name, tuple(args or ()))),
    )
    return queued


@pytest.fixture
def validated(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan_validate(scan_id=scan.pk, token="validate-1").status == ScanStatus.VALIDATED
    return scan


def test_a_step_past_its_soft_time_limit_fails_the_scan_as_retryable(
    validated, monkeypatch, sent, django_capture_on_commit_callbacks
):
    def too_long(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(processing, "reconstruct", too_long)
    with django_capture_on_commit_callbacks(execute=True):
        reconstruct_scan.apply(args=[validated.pk], task_id="recon-1")
    validated.refresh_from_db()
    assert validated.status == ScanStatus.FAILED and validated.retryable
    assert validated.status_reason == (
        f"imaging.reconstruct_scan took longer than {settings.IMAGING_TASK_SOFT_TIME_LIMIT} s"
    )
    assert sent == []


def test_a_transient_error_is_retried_then_fails_the_scan_as_retryable(
    validated, monkeypatch, sent, django_capture_on_commit_callbacks
):
    calls = []

    def disk_gone(*args, **kwargs):
        calls.append(1)
        raise OSError("storage unreachable")

    monkeypatch.setattr(processing, "reconstruct", disk_gone)
    monkeypatch.setattr(reconstruct_scan, "max_retries", 2)
    with django_capture_on_commit_callbacks(execute=True):
        reconstruct_scan.apply(args=[validated.pk], task_id="recon-1")
    validated.refresh_from_db()
    assert len(calls) == 3  # the first try and two retries, each resuming its own claim
    assert validated.status == ScanStatus.FAILED and validated.retryable
    assert validated.status_reason == "OSError after 2 retries: storage unreachable"
    assert sent == []


def test_a_step_killed_at_its_hard_time_limit_fails_the_scan_it_claimed(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan_claim(scan_id=scan.pk, from_status=ScanStatus.RECEIVED, to_status=ScanStatus.VALIDATING, token="v-1")
    validate_scan.on_failure(ValueError("not a time limit"), "v-1", (scan.pk,), {}, None)
    assert Scan.objects.get(pk=scan.pk).status == ScanStatus.VALIDATING  # other failures: _run has handled them

    validate_scan.on_failure(TimeLimitExceeded(), "v-1", (scan.pk,), {}, None)
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED and scan.retryable
    assert scan.status_reason == (
        f"imaging.validate_scan was stopped at its hard time limit of {settings.IMAGING_TASK_TIME_LIMIT} s"
    )


def test_a_final_status_queues_no_step(api, pipeline, sent, django_capture_on_commit_callbacks):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    for status in (ScanStatus.QUANTIFIED, ScanStatus.REJECTED, ScanStatus.FAILED):
        scan.status = status
        with django_capture_on_commit_callbacks(execute=True):
            queue_next_step(scan)
    assert sent == []
    scan.status = ScanStatus.RECEIVED
    with django_capture_on_commit_callbacks(execute=True):
        queue_next_step(scan)
    assert sent == [("imaging.validate_scan", (scan.pk,))]
