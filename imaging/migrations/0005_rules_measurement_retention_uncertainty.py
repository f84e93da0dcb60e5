"""Store each measurement's retention uncertainty (issue #13: the subject page drew the
error bar against the subject's first injection, the point against the scan's own).

Existing rows are filled from their own stored values: retention_percent was computed as
100 · iron_ng / injected with the scan's own injection, so the same injection gives
100 · uncertainty_ng / injected = retention_percent · uncertainty_ng / iron_ng. A row
with iron_ng == 0 falls back to the injected iron its scan's summary stored; a row with
neither stays null (no error bar drawn) until the scan is quantified again.
"""

from django.db import migrations, models


def fill_retention_uncertainty(apps, schema_editor):
    Measurement = apps.get_model("imaging", "Measurement")
    rows = Measurement.objects.filter(retention_uncertainty_percent__isnull=True).select_related("scan")
    for m in rows.iterator(chunk_size=2000):
        if m.iron_ng:
            value = m.retention_percent * m.uncertainty_ng / m.iron_ng
        else:
            injected = (m.scan.metrics_summary or {}).get("injected_iron_ng")
            value = 100.0 * m.uncertainty_ng / injected if injected else None
        if value is not None:
            Measurement.objects.filter(pk=m.pk).update(retention_uncertainty_percent=value)


class Migration(migrations.Migration):

    dependencies = [
        ("imaging", "0004_dicom_send_attempts"),
    ]

    operations = [
        migrations.AddField(
            model_name="measurement",
            name="retention_uncertainty_percent",
            field=models.FloatField(null=True),
        ),
        migrations.RunPython(fill_retention_uncertainty, migrations.RunPython.noop),
    ]
