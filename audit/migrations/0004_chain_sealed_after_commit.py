"""Audit events may wait, for the moments after their transaction's commit, to be chained.

PostgreSQL only (issue #17): a service's transaction appends its event *pending*
(``sequence`` and ``hash`` NULL, ``prev_hash`` holding a keyed MAC of the event's content),
and the chain is extended after the commit, in batches, by whichever process holds the
chain lock (``audit.chain.seal_pending``). So:

- ``sequence`` and ``hash`` become nullable (NULL only while pending);
- a partial index finds the pending events;
- the append-only trigger lets exactly one UPDATE through per event: the one that fills
  in a pending event's chain fields (``sequence``, ``prev_hash``, ``hash``, ``key_id``),
  with every other column unchanged. A chained event stays refused any UPDATE, and
  DELETE and TRUNCATE stay refused.

SQLite (the embedded default) keeps chaining each event inside its own transaction (its
write transaction serialises writers anyway): the columns stay NOT NULL there and its
triggers are untouched (changing a column's nullability makes Django rebuild an SQLite
table, which would drop them).
"""

from django.db import migrations, models

_CONTENT = (
    "id, occurred_at, actor_id, actor_username, action, object_type, object_id, trial_id, "
    "site_id, subject_id, changes, reason, request_id, client_address"
)
_NEW = ", ".join(f"NEW.{c.strip()}" for c in _CONTENT.split(","))
_OLD = ", ".join(f"OLD.{c.strip()}" for c in _CONTENT.split(","))

PG_FORWARD = f"""
ALTER TABLE compliance_auditevent ALTER COLUMN sequence DROP NOT NULL;
ALTER TABLE compliance_auditevent ALTER COLUMN hash DROP NOT NULL;
CREATE INDEX IF NOT EXISTS audit_event_pending_idx ON compliance_auditevent (id) WHERE hash IS NULL;
CREATE OR REPLACE FUNCTION compliance_auditevent_refuse_change() RETURNS trigger AS $$
BEGIN
    -- The one UPDATE allowed: chaining a pending event, its content untouched.
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND OLD.sequence IS NULL
       AND NEW.hash IS NOT NULL AND NEW.sequence IS NOT NULL AND NEW.key_id IS NOT NULL
       AND ({_NEW}) IS NOT DISTINCT FROM ({_OLD}) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused on compliance_auditevent', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

PG_REVERSE = """
CREATE OR REPLACE FUNCTION compliance_auditevent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % refused on compliance_auditevent', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
DROP INDEX IF EXISTS audit_event_pending_idx;
ALTER TABLE compliance_auditevent ALTER COLUMN hash SET NOT NULL;
ALTER TABLE compliance_auditevent ALTER COLUMN sequence SET NOT NULL;
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)


def reverse(apps, schema_editor):
    # Fails (NOT NULL) while events are pending: run `manage.py verify_audit` first, which chains them.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_REVERSE, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_alter_auditevent_action")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="sequence",
                    field=models.PositiveBigIntegerField(editable=False, null=True, unique=True),
                ),
                migrations.AlterField(
                    model_name="auditevent",
                    name="hash",
                    field=models.CharField(editable=False, max_length=64, null=True, unique=True),
                ),
            ],
            database_operations=[migrations.RunPython(forward, reverse)],
        ),
    ]
