"""Keep the audit table's append-only triggers on during every test.

Django's test runner empties the tables after a transactional test (TRUNCATE on
PostgreSQL, DELETE on SQLite), which the triggers refuse, as they should in production.
So the triggers that block the flush are switched off just for it, and on again when the
next test that uses the database starts.
"""

from __future__ import annotations

import importlib

import pytest

# The trigger statements live in the migration that created them.
triggers = importlib.import_module("compliance.migrations.0002_audit_append_only")


def _set(enabled: bool) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            verb = "ENABLE" if enabled else "DISABLE"
            cursor.execute(f"ALTER TABLE compliance_auditevent {verb} TRIGGER compliance_auditevent_no_truncate")
        elif connection.vendor == "sqlite":
            for statement in triggers.SQLITE_FORWARD if enabled else triggers.SQLITE_REVERSE:
                cursor.execute(statement)


@pytest.fixture(autouse=True)
def _audit_triggers_on(request):
    marker = request.node.get_closest_marker("django_db")
    uses_db = marker is not None or {"db", "transactional_db", "live_server"} & set(request.fixturenames)
    if not uses_db:
        yield
        return
    transactional = {"transactional_db", "live_server"} & set(request.fixturenames) or bool(
        marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0]))
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    _set(True)
    yield
    if transactional:
        _set(False)  # runs before pytest-django's flush, which the triggers would refuse


def tamper(sql: str, params) -> None:
    """Change audit rows behind the triggers' back, as whoever holds the database could."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("ALTER TABLE compliance_auditevent DISABLE TRIGGER compliance_auditevent_append_only")
            cursor.execute(sql, params)
            cursor.execute("ALTER TABLE compliance_auditevent ENABLE TRIGGER compliance_auditevent_append_only")
        else:
            for statement in triggers.SQLITE_REVERSE:
                cursor.execute(statement)
            cursor.execute(sql, params)
            for statement in triggers.SQLITE_FORWARD:
                cursor.execute(statement)
