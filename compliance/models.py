from __future__ import annotations

from django.conf import settings
from django.db import models

from compliance.actions import AuditAction


class AuditEvent(models.Model):
    """One link of the tamper-evident audit trail.

    ``hash`` = SHA-256(previous event's hash + canonical JSON of this event), so a
    change to any stored event, or a removed one, breaks every later link. Rows are
    append-only: on PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE.
    Site and trial are plain ids, not foreign keys, so the trail never depends on
    (or cascades with) the records it describes.
    """

    sequence = models.PositiveBigIntegerField(unique=True, editable=False)
    occurred_at = models.DateTimeField(editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    actor_username = models.CharField(max_length=150, blank=True, editable=False)
    action = models.PositiveIntegerField(choices=[(a.value, a.name) for a in AuditAction], editable=False)
    object_type = models.CharField(max_length=64, editable=False)
    object_id = models.CharField(max_length=64, blank=True, editable=False)
    trial_id = models.BigIntegerField(null=True, blank=True, editable=False)
    site_id = models.BigIntegerField(null=True, blank=True, editable=False)
    subject_id = models.BigIntegerField(null=True, blank=True, editable=False)
    changes = models.JSONField(default=dict, blank=True, editable=False)
    reason = models.TextField(blank=True, editable=False)
    request_id = models.CharField(max_length=64, blank=True, editable=False)
    client_address = models.GenericIPAddressField(null=True, blank=True, editable=False)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)

    class Meta:
        ordering = ["sequence"]
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["subject_id", "sequence"]),
            models.Index(fields=["site_id", "sequence"]),
            models.Index(fields=["actor", "sequence"]),
            models.Index(fields=["action", "sequence"]),
            models.Index(fields=["occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action_name} {self.object_type}:{self.object_id}"

    @property
    def action_name(self) -> str:
        try:
            return AuditAction(self.action).name
        except ValueError:
            return str(self.action)
