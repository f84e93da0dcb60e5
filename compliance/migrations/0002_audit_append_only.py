"""On PostgreSQL, refuse UPDATE, DELETE and TRUNCATE of audit events at the database.

SQLite (the embedded default) gets equivalent triggers for UPDATE and DELETE.
"""

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION compliance_auditevent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on compliance_auditevent', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER compliance_auditevent_append_only
    BEFORE UPDATE OR DELETE ON compliance_auditevent
    FOR EACH ROW EXECUTE FUNCTION compliance_auditevent_refuse_change();
CREATE TRIGGER compliance_auditevent_no_truncate
    BEFORE TRUNCATE ON compliance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION compliance_auditevent_refuse_change();
"""

PG_REVERSE = """
DROP TRIGGER IF EXISTS compliance_auditevent_no_truncate ON compliance_auditevent;
DROP TRIGGER IF EXISTS compliance_auditevent_append_only ON compliance_auditevent;
DROP FUNCTION IF EXISTS compliance_auditevent_refuse_change();
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER IF NOT EXISTS compliance_auditevent_no_update BEFORE UPDATE ON compliance_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused on compliance_auditevent'); END;""",
    """CREATE TRIGGER IF NOT EXISTS compliance_auditevent_no_delete BEFORE DELETE ON compliance_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused on compliance_auditevent'); END;""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS compliance_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS compliance_auditevent_no_delete;",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def reverse(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_REVERSE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("compliance", "0001_initial")]
    operations = [migrations.RunPython(forward, reverse)]
