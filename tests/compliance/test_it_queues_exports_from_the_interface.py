"""Issue #13: the export services queue no task. The interface that requests or retries an
export queues its build once the transaction commits (``compliance.tasks.queue_export``),
as imaging's interfaces queue a scan's next step; ``compliance/services`` never imports
the tasks, so services and tasks form no loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from celery.app.task import Task

from compliance import tasks
from compliance.models import Export
from compliance.services.exports import export_request, export_retry, export_run

SERVICES = Path(tasks.__file__).resolve().parent / "services"


@pytest.fixture
def sent(monkeypatch):
    """Every task queued: (name, args, queue option)."""
    queued = []
    monkeypatch.setattr(
        Task,
        "apply_async",
        lambda self, args=None, kwargs=None, **options: queued.append(
            (self.name, tuple(args or ()), options.get("queue"))
        ),
    )
    return queued


def test_no_compliance_service_imports_the_tasks():
    imported = set()
    for path in sorted(SERVICES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
    assert len(list(SERVICES.glob("*.py"))) >= 2
    assert not {name for name in imported if name.startswith("compliance.tasks")}, imported


def test_the_service_queues_nothing(sent, auditor, trial, visit, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        export = export_request(actor=auditor, kind=Export.Kind.AUDIT_JSON, trial=trial)
    assert export.status == Export.Status.QUEUED and sent == []


def test_the_api_queues_the_build_on_commit(api, sent, auditor, trial, visit, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api(auditor).post("/api/v1/exports/", {"kind": "audit_json", "trial": trial.pk}, format="json")
    assert response.status_code == 201, response.content
    assert sent == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert sent == [("compliance.run_export", (response.json()["id"],), "export")]


def test_a_refused_request_queues_nothing(api, sent, coordinator_a, trial, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(coordinator_a).post("/api/v1/exports/", {"kind": "audit_json", "trial": trial.pk}, format="json")
    assert response.status_code == 403 and sent == [] and not Export.objects.exists()


def test_the_exports_page_queues_the_request_and_the_retry(
    client, sent, auditor, trial, visit, monkeypatch, django_capture_on_commit_callbacks
):
    client.force_login(auditor)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/exports/", {"kind": "report_csv", "trial": trial.pk, "site": ""})
    assert response.status_code == 302, response.content[:400]
    export = Export.objects.get()
    assert sent == [("compliance.run_export", (export.pk,), "export")]

    Export.objects.filter(pk=export.pk).update(status=Export.Status.FAILED, error="disk full")
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/exports/{export.pk}/retry/").status_code == 302
    assert sent[1:] == [("compliance.run_export", (export.pk,), "export")]
    assert Export.objects.get().status == Export.Status.QUEUED


def test_the_api_retry_queues_the_build(api, sent, auditor, trial, visit, django_capture_on_commit_callbacks):
    export = export_request(actor=auditor, kind=Export.Kind.AUDIT_JSON, trial=trial)
    Export.objects.filter(pk=export.pk).update(status=Export.Status.FAILED, error="disk full")
    with django_capture_on_commit_callbacks(execute=True):
        response = api(auditor).post(f"/api/v1/exports/{export.pk}/retry/")
    assert response.status_code == 202
    assert sent == [("compliance.run_export", (export.pk,), "export")]
    # and the service alone, again, queues nothing
    Export.objects.filter(pk=export.pk).update(status=Export.Status.FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        export_retry(actor=auditor, export=Export.objects.get(pk=export.pk))
    assert len(sent) == 1
    assert export_run(export.pk).status == Export.Status.READY
