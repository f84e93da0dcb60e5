"""What a key's first request answered, so a second submission of it is answered the same
without writing anything again (``idempotency.middleware``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class IdempotencyKey(models.Model):
    """One key of one user: a page's form token (``form_token``) or an API client's
    ``Idempotency-Key``. Keys are per user: another user's key is another row.

    Operational state, not trial data (the write it guards has its own audit event); rows
    are deleted ``IDEMPOTENCY_KEY_TTL`` after they were made (``idempotency.store.purge``)."""

    class State(models.TextChoices):
        PENDING = "pending"  # the first request is being answered
        DONE = "done"  # its answer is stored below

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # sha256 of method, path and body: the same key sent with another request is refused.
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content = models.TextField(blank=True)
    content_type = models.CharField(max_length=120, blank=True)
    location = models.CharField(max_length=2000, blank=True)
    created_at = models.DateTimeField(db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"
