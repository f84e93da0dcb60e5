"""``manage.py export_dicom`` writes the 4 objects of a quantified scan, valid for dciodvfy,
identified and de-identified, and audits the export."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from audit.actions import AuditAction
from audit.models import AuditEvent
from tests.imaging.dicom_cases import quantified  # noqa: F401
from tests.imaging.test_dicom_validate import run
from tests.services import require_executable

SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.30",
    "1.2.840.10008.5.1.4.1.1.66.4",
    "1.2.840.10008.5.1.4.1.1.88.34",
}


@pytest.mark.parametrize("deidentify", [False, True], ids=["identified", "deidentified"])
def test_it_writes_four_valid_objects(quantified, tmp_path, deidentify):  # noqa: F811
    dciodvfy = require_executable("dciodvfy", package="dicom3tools")
    out = io.StringIO()
    call_command(
        "export_dicom", str(quantified.pk), "--output", str(tmp_path), *(["--deidentify"] * deidentify), stdout=out
    )
    files = sorted(tmp_path.glob("*.dcm"))
    assert len(files) == 4
    lines = [line.split("\t") for line in out.getvalue().splitlines() if "\t" in line]
    assert {line[0] for line in lines} == {str(p) for p in files}
    assert {line[1] for line in lines} == SOP_CLASSES
    for path in files:
        errors, _ = run(dciodvfy, path)
        assert errors == [], f"{path.name}: {errors}"
    requested, completed = AuditEvent.objects.order_by("-sequence")[:2][::-1]
    assert (requested.action, completed.action) == (AuditAction.EXPORT_REQUESTED, AuditAction.EXPORT_COMPLETED)
    assert completed.actor is None and completed.object_id == str(quantified.pk)
    assert completed.changes["kind"] == ("dicom_study_deidentified" if deidentify else "dicom_study")
    assert len(completed.changes["objects"]) == 4


def test_it_audits_the_user_given(quantified, tmp_path, coordinator_a):  # noqa: F811
    call_command(
        "export_dicom", str(quantified.pk), "--output", str(tmp_path), "--user", "coordinator_a", stdout=io.StringIO()
    )
    assert AuditEvent.objects.order_by("-sequence").first().actor_username == coordinator_a.username


def test_it_refuses_a_sponsor_the_identified_study(quantified, tmp_path, sponsor):  # noqa: F811
    events, out = AuditEvent.objects.count(), tmp_path / "out"
    with pytest.raises(CommandError, match="may not export the identified"):
        call_command("export_dicom", str(quantified.pk), "--output", str(out), "--user", sponsor.username)
    assert AuditEvent.objects.count() == events and not out.exists()
