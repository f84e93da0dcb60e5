"""The audit chain becomes keyed: each event names the HMAC key (by id) its hash is under.

Events recorded before have no key id and keep their plain SHA-256 links: they are not
rewritten (the trail is append-only). Verification accepts them only as a prefix that a
signed checkpoint anchors, so this migration writes that checkpoint of the current head.
"""

from pathlib import Path

from django.db import migrations, models


def checkpoint_the_unkeyed_prefix(apps, schema_editor):
    from django.conf import settings

    from audit import checkpoints
    from audit.keys import keyring

    AuditEvent = apps.get_model("compliance", "AuditEvent")
    head = AuditEvent.objects.using(schema_editor.connection.alias).order_by("-sequence").values_list(
        "sequence", "hash").first()
    if head is not None:
        checkpoints.append(Path(settings.AUDIT_CHECKPOINT_DIR), sequence=head[0], hash=head[1], ring=keyring())


def ensure_sqlite_triggers(apps, schema_editor):
    # Adding a nullable column is a plain ALTER TABLE on SQLite, which keeps the triggers;
    # re-create them anyway (IF NOT EXISTS) so no later table rebuild can leave them off.
    if schema_editor.connection.vendor == "sqlite":
        import importlib

        triggers = importlib.import_module("compliance.migrations.0002_audit_append_only")
        for statement in triggers.SQLITE_FORWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("compliance", "0004_dicom_exports")]
    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="key_id",
            field=models.CharField(blank=True, editable=False, max_length=16, null=True),
        ),
        migrations.RunPython(ensure_sqlite_triggers, migrations.RunPython.noop),
        migrations.RunPython(checkpoint_the_unkeyed_prefix, migrations.RunPython.noop),
    ]
