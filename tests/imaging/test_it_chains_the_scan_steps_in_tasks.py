"""The scan pipeline's chain lives in ``imaging/tasks.py`` (issue #13): each task calls its
service and, when the step succeeded, queues the next task on commit (validate ->
reconstruct -> quantify). Services queue nothing; the interface that completes an upload,
retries a scan or asks for a PACS send queues the first task. The import graph has no
loop: services, pacs and dicom_export never import the tasks, selectors never the services."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from celery.app.task import Task

from imaging import processing, tasks
from imaging.cache import SystemMatrixCache
from imaging.models import DicomSend, PacsDestination, Scan, ScanStatus
from imaging.services.scan_claims import scan_claim
from imaging.services.scan_steps import scan_reconstruct, scan_validate
from tests.imaging.dicom_cases import quantified  # noqa: F401 - fixture
from tests.imaging.helpers import uploaded_scan

IMAGING = Path(tasks.__file__).resolve().parent


@pytest.fixture
def sent(monkeypatch):
    """Every task queued (``delay`` / ``apply_async``): (name, args, queue option)."""
    queued = []
    monkeypatch.setattr(
        Task,
        "apply_async",
        lambda self, args=None, kwargs=None, **options: queued.append(
            (self.name, tuple(args or ()), options.get("queue"))
        ),
    )
    return queued


def _imports(module: str) -> set[str]:
    """Every module ``imaging/<module>.py`` (or each module of the package ``imaging/<module>/``)
    imports, at the top or inside a function."""
    package = IMAGING / module
    files = sorted(package.glob("*.py")) if package.is_dir() else [IMAGING / f"{module}.py"]
    assert files, module
    names = set()
    for node in (node for path in files for node in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


@pytest.mark.parametrize("module", ["services", "pacs", "dicom_export", "selectors"])
def test_no_service_or_selector_imports_the_tasks(module):
    assert "imaging.tasks" not in _imports(module)


def test_selectors_do_not_import_services():
    assert not {name for name in _imports("selectors") if "services" in name}


def test_a_service_step_queues_nothing(api, pipeline, sent, django_capture_on_commit_callbacks):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    with django_capture_on_commit_callbacks(execute=True):
        assert scan_validate(scan_id=scan.pk, token="t").status == ScanStatus.VALIDATED
        scan_reconstruct(scan_id=scan.pk, token="t", cache=SystemMatrixCache(10**9))
    assert sent == []


def test_completing_an_upload_through_the_api_queues_validation_once(
    api, pipeline, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert sent == [("imaging.validate_scan", (scan.pk,), None)]


def test_each_task_queues_the_next_step_when_its_own_succeeded(api, pipeline, sent, django_capture_on_commit_callbacks):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    for task, after, queued in (
        (tasks.validate_scan, ScanStatus.VALIDATED, "imaging.reconstruct_scan"),
        (tasks.reconstruct_scan, ScanStatus.RECONSTRUCTED, "imaging.quantify_scan"),
        (tasks.quantify_scan, ScanStatus.QUANTIFIED, None),
    ):
        sent.clear()
        with django_capture_on_commit_callbacks(execute=True):
            task.apply(args=[scan.pk], task_id=f"{task.name}-1")
        scan.refresh_from_db()
        assert scan.status == after, scan.status_reason
        assert sent == ([(queued, (scan.pk,), None)] if queued else [])


def test_a_step_that_lost_its_claim_or_failed_queues_nothing(
    api, pipeline, sent, monkeypatch, django_capture_on_commit_callbacks
):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    assert scan_claim(
        scan_id=scan.pk, from_status=ScanStatus.RECEIVED, to_status=ScanStatus.VALIDATING, token="another-worker"
    )
    with django_capture_on_commit_callbacks(execute=True):
        tasks.validate_scan.apply(args=[scan.pk], task_id="late-duplicate")
    assert sent == [] and Scan.objects.get(pk=scan.pk).claim_token == "another-worker"

    with django_capture_on_commit_callbacks(execute=True):
        tasks.validate_scan.apply(args=[scan.pk], task_id="another-worker")  # its own redelivery
    assert [name for name, _, _ in sent] == ["imaging.reconstruct_scan"]

    sent.clear()

    def broken(*args, **kwargs):
        raise ValueError("the solver diverged")

    monkeypatch.setattr(processing, "reconstruct", broken)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.reconstruct_scan.apply(args=[scan.pk], task_id="recon-1")
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED and "the solver diverged" in scan.status_reason
    assert sent == []


def test_a_retry_through_the_api_queues_the_step_the_scan_went_back_to(
    api, pipeline, sent, django_capture_on_commit_callbacks
):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    Scan.objects.filter(pk=scan.pk).update(status=ScanStatus.FAILED, retryable=True, status_reason="timeout")
    with django_capture_on_commit_callbacks(execute=True):
        response = api(pipeline.user).post(f"/api/v1/scans/{scan.pk}/retry/")
    assert response.status_code == 200 and response.json()["status"] == ScanStatus.RECEIVED
    assert sent == [("imaging.validate_scan", (scan.pk,), None)]


def test_a_pacs_send_through_the_api_queues_its_task_on_the_export_queue(
    api,
    quantified,  # noqa: F811
    coordinator_a,
    sent,
    django_capture_on_commit_callbacks,
):
    from imaging import pacs

    destination = pacs.pacs_destination_register(
        actor=None,
        trial=quantified.subject.trial,
        name="Archive",
        protocol="dicomweb",
        base_url="http://pacs.invalid/dicom-web",
    )
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = api(coordinator_a).post(
            f"/api/v1/scans/{quantified.pk}/dicom-sends/", {"destination": destination.pk}, format="json"
        )
    assert response.status_code == 201, response.content
    send = DicomSend.objects.get()
    assert response.json()["id"] == send.pk and PacsDestination.objects.count() == 1
    assert sent == [("imaging.send_dicom", (send.pk,), "export")]
