"""The demo: scanners and system matrices at both sites, four time points per injected
subject uploaded through the services, retention falling and off-target rising; twice
is the same as once."""

from __future__ import annotations

import hashlib
import io

from django.contrib.auth import get_user_model
from django.core.management import call_command

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.management.commands.load_demo_scans import SCANNER_NAME, SIMULATOR_DEFAULT_NAME
from imaging.models import Scan, Scanner, SystemMatrix
from imaging.services.rois import rois_for
from imaging.services.scan_uploads import UploadRequest, upload_append, upload_create
from recon import cli as recon_cli
from tests.imaging.helpers import process


def test_it_loads_demo_scans_that_show_the_time_course_and_is_idempotent(db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("load_demo_scans", stdout=out)
    # Per site: the demo's own 12 x 12 calibration and the simulator's default one.
    assert Scanner.objects.count() == 2 and SystemMatrix.objects.filter(active=True).count() == 4
    scans = Scan.objects.order_by("subject__code", "hours_after_injection")
    # Three injected subjects; the one who withdrew longitudinal imaging keeps the 0 h scan
    # only: the follow-up upload is refused, audited, and said.
    per_subject = sorted(scans.values_list("subject__code", flat=True).distinct())
    hours = {
        code: list(scans.filter(subject__code=code).values_list("hours_after_injection", flat=True))
        for code in per_subject
    }
    assert sorted(len(h) for h in hours.values()) == [1, 4, 4], hours
    assert scans.count() == 9 and set(scans.values_list("status", flat=True)) == {"received"}
    assert "upload refused (" in out.getvalue() and "no longitudinal_imaging consent in force" in out.getvalue()
    assert AuditEvent.objects.filter(action=AuditAction.UPLOAD_REFUSED).count() == 1

    call_command("load_demo_scans", stdout=io.StringIO())
    assert Scan.objects.count() == 9 and SystemMatrix.objects.count() == 4

    first_subject = scans.first().subject
    course = [process(scan) for scan in scans.filter(subject=first_subject)]
    assert [s.status for s in course] == ["quantified"] * 4
    retention = [s.metrics_summary["retention_percent"] for s in course]
    off_target = [s.metrics_summary["off_target_percent"] for s in course]
    assert retention == sorted(retention, reverse=True), retention
    assert off_target == sorted(off_target), off_target
    assert abs(retention[0] - 70) < 7 and abs(retention[-1] - 33) < 4
    assert rois_for(course[0])


def test_the_demo_accepts_what_python_m_recon_simulate_writes(db, settings, tmp_path, capsys):
    """Issue #18 item 4: the demo's own simulator output is no dead end. A scan written by
    ``python -m recon simulate`` (no options) is uploaded for a demo subject, matched to the
    simulator's default calibration in the demo library, and quantified."""
    settings.MEDIA_ROOT = tmp_path / "media"
    call_command("load_demo", stdout=io.StringIO())
    call_command("load_demo_scans", stdout=io.StringIO())
    assert recon_cli.main(["simulate", "--output-dir", str(tmp_path / "sim")]) == 0
    capsys.readouterr()
    measurement = tmp_path / "sim" / "measurement.mdf"
    subject = Scan.objects.order_by("subject__code").first().subject
    injection = subject.injections.order_by("administered_at").first()
    scanner = Scanner.objects.get(site=subject.site, name=SCANNER_NAME)
    uploader = get_user_model().objects.get(
        trial_memberships__site=subject.site, trial_memberships__role="imaging_staff", trial_memberships__active=True
    )
    data = measurement.read_bytes()
    upload = upload_create(
        actor=uploader,
        request=UploadRequest(
            subject=subject,
            injection_id=injection.pk,
            scanner_id=scanner.pk,
            hours_after_injection=96.0,
            sha256=hashlib.sha256(data).hexdigest(),
            filename="measurement.mdf",
            length=len(data),
        ),
    )
    with open(measurement, "rb") as fh:
        outcome = upload_append(actor=uploader, upload=upload, offset=0, source=fh, checksum=None)

    scan = process(outcome.scan)

    assert scan.status == "quantified", scan.status_reason
    assert scan.system_matrix.name == SIMULATOR_DEFAULT_NAME
    assert scan.system_matrix.dividers == [102, 96] and scan.system_matrix.grid_size == [20, 20, 1]
