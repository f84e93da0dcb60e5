"""The audit trail's one table.

The model was born in ``compliance`` (migrations 0001-0011 there built the table and its
append-only triggers, 0002) and moved to this app without touching the database
(``audit/migrations/0001_initial.py``): the table keeps its name, its rows, its index
names and its triggers.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from audit.actions import AuditAction

# The table's name since the first migration; the append-only triggers, the database
# roles (``print_db_roles_sql``) and the verification SQL (``audit.chain``) name it.
AUDIT_TABLE = "compliance_auditevent"


class AuditEvent(models.Model):
    """One link of the tamper-evident audit trail.

    ``hash`` = HMAC-SHA256 under the chain key named by ``key_id`` of (previous event's
    hash + canonical JSON of this event), so a change to any stored event, or a removed
    one, breaks every later link, and only a holder of the key (never the database) can
    recompute them. Events recorded before the chain was keyed have no ``key_id`` and a
    plain SHA-256 ``hash``; they form a prefix anchored by a signed checkpoint
    (``audit.checkpoints``). Rows are append-only: on PostgreSQL a trigger refuses
    UPDATE, DELETE and TRUNCATE, on SQLite triggers refuse UPDATE and DELETE; the one
    UPDATE PostgreSQL lets through is the chaining of a pending event (``sequence`` and
    ``hash`` NULL, written by its transaction) with its content unchanged (audit 0004).
    Site and trial are plain ids, not foreign keys, so the trail never depends on
    (or cascades with) the records it describes.
    """

    # NULL only while the event waits to be chained (PostgreSQL, for the moments after its
    # transaction's commit: ``audit.chain.seal_pending``); then its place in the chain.
    sequence = models.PositiveBigIntegerField(unique=True, null=True, editable=False)
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
    # NULL while pending, when ``prev_hash`` holds the pending MAC (``audit.chain``).
    hash = models.CharField(max_length=64, unique=True, null=True, editable=False)  # noqa: DJ001 - NULL = pending
    # Nullable so that adding it is a plain ADD COLUMN on SQLite too (a NOT NULL column
    # makes Django rebuild the table, which would drop the append-only triggers).
    key_id = models.CharField(max_length=16, null=True, blank=True, editable=False)  # noqa: DJ001 - see above

    class Meta:
        db_table = AUDIT_TABLE
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
