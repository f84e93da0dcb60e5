"""Issue #17: an export requested while the broker is away is accepted (201) and built once
the broker returns: its build task waits in the outbox, written with the export."""

from __future__ import annotations

import kombu.exceptions
from celery.app.task import Task

from compliance.models import Export
from outbox.models import OutboxMessage
from outbox.relay import relay


def test_an_export_requested_with_the_broker_down_is_queued_when_it_returns(
    api, auditor, trial, visit, monkeypatch, django_capture_on_commit_callbacks
):
    sent, up = [], [False]

    def publish(self, args=None, kwargs=None, **options):
        if not up[0]:
            raise kombu.exceptions.OperationalError("Error 111 connecting to redis:6379. Connection refused.")
        sent.append((self.name, tuple(args or ()), options.get("queue")))

    monkeypatch.setattr(Task, "apply_async", publish)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(auditor).post("/api/v1/exports/", {"kind": "audit_json", "trial": trial.pk}, format="json")
    assert response.status_code == 201, response.content
    export = Export.objects.get(pk=response.json()["id"])
    assert export.status == Export.Status.QUEUED and sent == []
    pending = OutboxMessage.objects.get(sent_at__isnull=True)
    assert pending.task == "compliance.run_export" and pending.args == [export.pk]

    up[0] = True
    OutboxMessage.objects.update(due_at=pending.created_at)
    assert relay() == 1
    assert sent == [("compliance.run_export", (export.pk,), "export")]
