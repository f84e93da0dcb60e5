"""Keep the audit table's append-only triggers on during every test.

Django's test runner empties the tables after a transactional test with TRUNCATE, which
the PostgreSQL trigger refuses (as it should in production). So, on PostgreSQL only,
the truncate trigger is switched off just for that flush, and on again before the next
test starts.
"""

from __future__ import annotations

import pytest

_ALTER = "ALTER TABLE compliance_auditevent {} TRIGGER compliance_auditevent_no_truncate"


def _set(enabled: bool) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(_ALTER.format("ENABLE" if enabled else "DISABLE"))


@pytest.fixture(autouse=True)
def _audit_triggers_on(request):
    marker = request.node.get_closest_marker("django_db")
    uses_db = marker is not None or "db" in request.fixturenames or "transactional_db" in request.fixturenames
    if not uses_db:
        yield
        return
    from django.db import connection

    transactional = "transactional_db" in request.fixturenames or bool(
        marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0]))
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    if connection.vendor != "postgresql":
        yield
        return
    _set(True)
    yield
    if transactional:
        _set(False)  # runs before pytest-django's flush, which needs TRUNCATE
