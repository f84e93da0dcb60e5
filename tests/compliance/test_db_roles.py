"""The application's PostgreSQL role cannot alter or erase the audit trail (issue #12, item 10)."""

from __future__ import annotations

import io
import uuid
from unittest.mock import patch

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit import chain
from audit.actions import AuditAction
from audit.chain import record_event, verify_chain
from audit.models import AuditEvent
from tests.services import require_postgres

pytestmark = pytest.mark.django_db


def _sql(**options) -> str:
    out = io.StringIO()
    call_command("print_db_roles_sql", stdout=out, **options)
    return out.getvalue()


def _execute(sql: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.mark.postgres
def test_the_app_role_may_only_read_and_append_audit_events():
    require_postgres()
    # Roles are cluster-wide; made inside the test's transaction, they vanish with its rollback.
    suffix = uuid.uuid4().hex[:10]
    owner, app = f"mpi_owner_t{suffix}", f"mpi_app_t{suffix}"
    _execute(_sql(owner_role=owner, app_role=app, create_roles=True))
    _execute(_sql(owner_role=owner, app_role=app))  # idempotent: runs again after every migrate
    user = get_user_model().objects.create_user("alice", password="x" * 16)
    with transaction.atomic():
        record_event(actor=user, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=1)

    _execute(f'SET ROLE "{app}"')
    try:
        # What the application does still works: append an event, read and verify the chain.
        with transaction.atomic():
            record_event(actor=user, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=2)
        assert verify_chain().ok and AuditEvent.objects.count() == 2
        # An event written pending (chained after its commit, issue #17) is chained by the app role.
        with transaction.atomic():
            with patch.object(chain, "_chain_after_commit", return_value=True):
                pending = record_event(
                    actor=user, action=AuditAction.SUBJECT_UPDATED, object_type="subject", object_id=3
                )
            assert pending.sequence is None and chain.seal_pending() == 1
        assert verify_chain().ok and AuditEvent.objects.get(pk=pending.pk).sequence == 3
        _execute("UPDATE compliance_export SET error = error WHERE false")  # other tables: read-write
        refused = {
            "DROP TRIGGER compliance_auditevent_append_only ON compliance_auditevent": "must be owner",
            "ALTER TABLE compliance_auditevent DISABLE TRIGGER compliance_auditevent_append_only": "must be owner",
            "DROP TABLE compliance_auditevent CASCADE": "must be owner",
            "UPDATE compliance_auditevent SET reason = 'edited'": "permission denied",
            "DELETE FROM compliance_auditevent": "permission denied",
            "TRUNCATE compliance_auditevent CASCADE": "permission denied",
            "CREATE TABLE compliance_shadow (id int)": "permission denied",
        }
        for statement, message in refused.items():
            with pytest.raises(DatabaseError, match=message):
                _execute(statement)
    finally:
        _execute("RESET ROLE")
    assert list(AuditEvent.objects.values_list("sequence", "reason")) == [(1, ""), (2, ""), (3, "")]
    assert verify_chain().ok


def test_it_refuses_a_role_name_that_is_not_a_plain_identifier():
    with pytest.raises(CommandError, match="role name 'app; DROP TABLE x' must be"):
        _sql(app_role="app; DROP TABLE x")
    with pytest.raises(CommandError, match="must differ"):
        _sql(owner_role="mpi", app_role="mpi")
