"""The audit trail moves from compliance to this app without touching the database.

State only: the model ``audit.AuditEvent`` takes over the table ``compliance_auditevent``
that compliance's migrations built (0001) and changed (0005 added ``key_id``; the
action choices follow the enum), with its rows, its index names and its append-only
triggers (compliance 0002) untouched; compliance 0012 then drops the model from its own
state. So this migration depends on compliance 0011: the table exists, in its final shape,
before this app's state says it does (a fresh database is built by compliance's migrations).

The content type moves with the model (``compliance.auditevent`` -> ``audit.auditevent``), so
the permissions attached to it stay attached; that is the only row this writes.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def _move_content_type(apps, schema_editor, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    if not types.filter(app_label=target, model="auditevent").exists():
        types.filter(app_label=source, model="auditevent").update(app_label=target)


def content_type_to_audit(apps, schema_editor):
    _move_content_type(apps, schema_editor, "compliance", "audit")


def content_type_to_compliance(apps, schema_editor):
    _move_content_type(apps, schema_editor, "audit", "compliance")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("compliance", "0011_gaps_retire_unwritten_audit_actions"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('sequence', models.PositiveBigIntegerField(editable=False, unique=True)),
                        ('occurred_at', models.DateTimeField(editable=False)),
                        ('actor_username', models.CharField(blank=True, editable=False, max_length=150)),
                        ('action', models.PositiveIntegerField(choices=[(100, 'TRIAL_CREATED'), (110, 'SITE_CREATED'), (120, 'MEMBERSHIP_GRANTED'), (200, 'SUBJECT_ENROLLED'), (201, 'SUBJECT_UPDATED'), (202, 'SUBJECT_STATUS_CHANGED'), (210, 'IDENTITY_CREATED'), (211, 'IDENTITY_UPDATED'), (212, 'IDENTITY_READ'), (213, 'IDENTITY_READ_REFUSED'), (300, 'CONSENT_DOCUMENT_CREATED'), (310, 'CONSENT_SIGNED'), (311, 'CONSENT_WITHDRAWN'), (312, 'CONSENT_UPDATED'), (400, 'LOT_REGISTERED'), (401, 'LOT_UPDATED'), (402, 'LOT_QC_STATUS_CHANGED'), (410, 'BATCH_REGISTERED'), (411, 'BATCH_UPDATED'), (412, 'BATCH_LABELLED'), (413, 'BATCH_RELEASE_STATUS_CHANGED'), (500, 'INJECTION_RECORDED'), (501, 'INJECTION_UPDATED'), (502, 'INJECTION_VERIFICATION_REFUSED'), (600, 'SCANNER_REGISTERED'), (610, 'SYSTEM_MATRIX_REGISTERED'), (611, 'SYSTEM_MATRIX_RETIRED'), (620, 'UPLOAD_STARTED'), (621, 'UPLOAD_COMPLETED'), (622, 'UPLOAD_REFUSED'), (630, 'SCAN_STATUS_CHANGED'), (640, 'RECONSTRUCTION_COMPLETED'), (650, 'METRICS_RECORDED'), (660, 'ROI_DEFINED'), (670, 'OFF_TARGET_ALERT_RAISED'), (700, 'FILE_DOWNLOADED'), (710, 'EXPORT_REQUESTED'), (711, 'EXPORT_COMPLETED'), (712, 'EXPORT_DOWNLOADED'), (713, 'EXPORT_RETRIED'), (720, 'AUDIT_TRAIL_VERIFIED'), (730, 'PACS_DESTINATION_REGISTERED'), (731, 'DICOM_SEND_REQUESTED'), (732, 'DICOM_SENT'), (733, 'DICOM_SEND_FAILED'), (800, 'LOGIN_SUCCEEDED'), (801, 'LOGIN_FAILED'), (802, 'LOGOUT'), (803, 'ACCOUNT_LOCKED'), (804, 'ACCOUNT_UNLOCKED'), (810, 'TOKEN_ISSUED'), (811, 'TOKEN_REVOKED'), (812, 'TOKEN_EXPIRED'), (813, 'TOKEN_REFUSED'), (820, 'SIGNATURE_APPLIED'), (821, 'SIGNATURE_INVALIDATED'), (822, 'SIGNATURE_REFUSED'), (830, 'TWO_FACTOR_FAILED'), (831, 'TWO_FACTOR_DEVICE_ENROLLED')], editable=False)),
                        ('object_type', models.CharField(editable=False, max_length=64)),
                        ('object_id', models.CharField(blank=True, editable=False, max_length=64)),
                        ('trial_id', models.BigIntegerField(blank=True, editable=False, null=True)),
                        ('site_id', models.BigIntegerField(blank=True, editable=False, null=True)),
                        ('subject_id', models.BigIntegerField(blank=True, editable=False, null=True)),
                        ('changes', models.JSONField(blank=True, default=dict, editable=False)),
                        ('reason', models.TextField(blank=True, editable=False)),
                        ('request_id', models.CharField(blank=True, editable=False, max_length=64)),
                        ('client_address', models.GenericIPAddressField(blank=True, editable=False, null=True)),
                        ('prev_hash', models.CharField(editable=False, max_length=64)),
                        ('hash', models.CharField(editable=False, max_length=64, unique=True)),
                        ('key_id', models.CharField(blank=True, editable=False, max_length=16, null=True)),
                        ('actor', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'compliance_auditevent',
                        'ordering': ['sequence'],
                        'indexes': [models.Index(fields=['object_type', 'object_id'], name='compliance__object__53cfe7_idx'), models.Index(fields=['subject_id', 'sequence'], name='compliance__subject_67f93e_idx'), models.Index(fields=['site_id', 'sequence'], name='compliance__site_id_cfdea9_idx'), models.Index(fields=['actor', 'sequence'], name='compliance__actor_i_8c6ab8_idx'), models.Index(fields=['action', 'sequence'], name='compliance__action_9030a0_idx'), models.Index(fields=['occurred_at'], name='compliance__occurre_ae6f62_idx')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_audit, content_type_to_compliance),
    ]
