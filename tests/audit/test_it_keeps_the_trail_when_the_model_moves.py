"""A database at the state before the audit app (AuditEvent in compliance, up to compliance
0011) migrates forward with its audit trail whole: the same rows, the same hashes, a chain
that still verifies, the append-only triggers still on, the content type (and so the
permissions) carried over. Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from audit.actions import AuditAction
from audit.chain import GENESIS_HASH, canonical_payload, chain_hash, verify_chain
from audit.keys import keyring
from audit.models import AuditEvent

BEFORE_AUDIT_APP = ("compliance", "0011_gaps_retire_unwritten_audit_actions")


def _migrate(targets) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _leaf_nodes() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _write_events_as_before(apps, actor_id: int, n: int) -> list[tuple[int, str, str]]:
    """Rows written through the historical model (AuditEvent of compliance), keyed as record_event keys them."""
    Historical = apps.get_model("compliance", "AuditEvent")
    ring = keyring()
    prev = GENESIS_HASH
    written = []
    for sequence in range(1, n + 1):
        fields: dict[str, Any] = dict(
            sequence=sequence,
            occurred_at=dt.datetime(2026, 11, 30, 8, 0, sequence, 250_000, tzinfo=dt.UTC),
            actor_id=actor_id,
            actor_username="alice",
            action=int(AuditAction.SUBJECT_ENROLLED),
            object_type="trials.subject",
            object_id=str(100 + sequence),
            trial_id=1,
            site_id=2,
            subject_id=100 + sequence,
            changes={"code": [None, f"S-{sequence:03d}"]},
            reason="",
            request_id=f"req-{sequence}",
            client_address="10.0.0.7",
        )
        digest = chain_hash(prev, canonical_payload(**fields), key=ring.current)
        with transaction.atomic():
            row = Historical.objects.create(prev_hash=prev, hash=digest, key_id=ring.current_id, **fields)
        written.append((row.pk, prev, digest))
        prev = digest
    return written


@pytest.mark.django_db(transaction=True)
def test_it_keeps_rows_hashes_chain_triggers_and_content_type(django_user_model):
    alice = django_user_model.objects.create_user("alice", password="a long password for alice")
    content_type = ContentType.objects.get(app_label="audit", model="auditevent")
    view_permission = Permission.objects.get(content_type=content_type, codename="view_auditevent")
    alice.user_permissions.add(view_permission)
    latest = _leaf_nodes()

    # Back to the state before this branch: audit unapplied (compliance 0012 with it).
    old = _migrate([("audit", None), BEFORE_AUDIT_APP])
    old_state = old.loader.project_state(BEFORE_AUDIT_APP).apps
    applied = MigrationRecorder(connection).applied_migrations()
    assert ("audit", "0001_initial") not in applied and ("compliance", "0012_auditevent_moves_to_audit") not in applied
    assert BEFORE_AUDIT_APP in applied
    assert ContentType.objects.filter(app_label="compliance", model="auditevent").exists()
    written = _write_events_as_before(old_state, alice.pk, 4)

    _migrate(latest)

    rows = list(AuditEvent.objects.order_by("sequence").values_list("pk", "prev_hash", "hash"))
    assert rows == written
    assert AuditEvent._meta.db_table == "compliance_auditevent"
    result = verify_chain()
    assert result.ok, result.problem
    assert result.events_checked == 4 and result.head_hash == written[-1][2]
    assert AuditEvent.objects.get(sequence=2).action_name == "SUBJECT_ENROLLED"

    # The append-only triggers came along with the table.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(sequence=1).update(reason="edited")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(sequence=4).delete()
    assert AuditEvent.objects.count() == 4 and AuditEvent.objects.get(sequence=1).reason == ""

    # One content type, the same row, the permission still attached to it.
    assert not ContentType.objects.filter(app_label="compliance", model="auditevent").exists()
    moved = ContentType.objects.get(app_label="audit", model="auditevent")
    assert moved.pk == content_type.pk
    alice = django_user_model.objects.get(pk=alice.pk)  # a fresh permission cache
    assert alice.has_perm("audit.view_auditevent")
