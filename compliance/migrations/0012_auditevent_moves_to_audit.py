"""The audit trail's model leaves compliance's state for the audit app's
(``audit/migrations/0001_initial.py``). State only: the table ``compliance_auditevent``,
its rows and its append-only triggers stay as they are."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("compliance", "0011_gaps_retire_unwritten_audit_actions"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="AuditEvent")],
            database_operations=[],
        ),
    ]
