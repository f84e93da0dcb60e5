"""The demo: scanners and system matrices at both sites, four time points per injected
subject uploaded through the services, retention falling and off-target rising; twice
is the same as once."""

from __future__ import annotations

import io

from django.core.management import call_command

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Scan, Scanner, SystemMatrix
from imaging.services.rois import rois_for
from tests.imaging.helpers import process


def test_it_loads_demo_scans_that_show_the_time_course_and_is_idempotent(db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("load_demo_scans", stdout=out)
    assert Scanner.objects.count() == 2 and SystemMatrix.objects.filter(active=True).count() == 2
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
    assert Scan.objects.count() == 9 and SystemMatrix.objects.count() == 2

    first_subject = scans.first().subject
    course = [process(scan) for scan in scans.filter(subject=first_subject)]
    assert [s.status for s in course] == ["quantified"] * 4
    retention = [s.metrics_summary["retention_percent"] for s in course]
    off_target = [s.metrics_summary["off_target_percent"] for s in course]
    assert retention == sorted(retention, reverse=True), retention
    assert off_target == sorted(off_target), off_target
    assert abs(retention[0] - 70) < 7 and abs(retention[-1] - 33) < 4
    assert rois_for(course[0])
