from __future__ import annotations

from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    """One task to hand to the broker: written in the transaction that made it due.

    Pending while ``sent_at`` is null; ``due_at`` is when a relay may try it next (a relay
    that takes a row pushes it forward first, so two relays rarely send it twice, and a
    duplicate is harmless: every task claims its row). Sent rows are kept a while so the
    sweeps can tell a step just handed to the broker from one whose message was lost."""

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    queue = models.CharField(max_length=32, blank=True, help_text="empty: CELERY_TASK_ROUTES decides")
    key = models.CharField(max_length=255, db_index=True, help_text="task and arguments, to find duplicates")
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["sent_at", "due_at"], name="outbox_pending_due")]

    def __str__(self) -> str:
        return f"{self.key} ({'sent' if self.sent_at else 'pending'})"
