"""Every entry of Celery beat's schedule names a task a worker has registered: a task that
moves between apps (the audit checkpoint left compliance for audit) keeps beat working."""

from __future__ import annotations

from django.conf import settings

from config.celery import app


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()  # what a worker does at start: autodiscover every app's tasks
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert {"audit-checkpoint", "expire-api-tokens"} <= set(schedule)
    missing = {key: entry["task"] for key, entry in schedule.items() if entry["task"] not in app.tasks}
    assert missing == {}
    assert app.tasks["compliance.audit_checkpoint"].__module__ == "audit.tasks"
