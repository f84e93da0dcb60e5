"""One rule for which consent scopes a scan at a time point needs (issue #18):
``trials.schedule.consent_scopes_for_scan``. The status grid and the upload's refusal
agree on every case: a time point the grid shows as not expected for want of consent is
one whose upload is refused for consent, and a time point it shows as expected or overdue
is one whose upload passes the consent check (a subject who missed 0 h may have 24 h as
the first scan, follow-up consent or not)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.errors import RuleViolation
from imaging.models import ScanStatus, Upload
from imaging.services.scan_uploads import UploadRequest, upload_create
from tests import factories as f
from tests.web.scans import scanner_at
from tests.web.test_record_pages import _scan
from trials.models import SubjectStatus
from trials.schedule import IMAGING_SCHEDULE_HOURS, consent_scopes_for_scan
from trials.services.consent import consent_withdraw
from web import records_queries

CONSENT_CODES = {"consent_missing", "consent_withdrawn"}
REASON = "Subject declined follow-up scans at visit 3"


def test_the_rule_first_scan_imaging_then_follow_up():
    assert consent_scopes_for_scan(24.0, hours_on_file=[]) == ("imaging",)
    assert consent_scopes_for_scan(24.0, hours_on_file=[24.0, 48.0]) == ("imaging",)  # none earlier
    assert consent_scopes_for_scan(24.0, hours_on_file=[0.0]) == ("imaging", "longitudinal_imaging")
    assert consent_scopes_for_scan(0.0, hours_on_file=[24.0]) == ("imaging",)


# (case, consent: None / "all" / "no-longitudinal", withdraw scopes, scans on file as (hours, status),
#  time point asked, grid state expected)
CASES = [
    (
        "missed 0 h, follow-up withdrawn: 24 h may be the first scan",
        "all",
        ["longitudinal_imaging"],
        [],
        24.0,
        "overdue",
    ),
    ("0 h on file, follow-up withdrawn", "all", ["longitudinal_imaging"], [(0.0, "quantified")], 24.0, "withdrawn"),
    ("0 h rejected, follow-up withdrawn", "all", ["longitudinal_imaging"], [(0.0, "rejected")], 24.0, "overdue"),
    ("0 h on file, follow-up never granted", "no-longitudinal", [], [(0.0, "quantified")], 24.0, "not-consented"),
    ("missed 0 h, follow-up never granted", "no-longitudinal", [], [], 48.0, "expected"),
    ("imaging withdrawn, nothing on file", "all", ["imaging"], [], 48.0, "withdrawn"),
    ("0 h and 24 h on file, all granted", "all", [], [(0.0, "quantified"), (24.0, "validated")], 48.0, "expected"),
    ("no consent on file", None, [], [(0.0, "quantified")], 48.0, "no-consent"),
]


@pytest.mark.parametrize(
    "consent_kind, withdraw, on_file, hours, state",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_grid_and_the_upload_refusal_agree(site_a, coordinator_a, consent_kind, withdraw, on_file, hours, state):
    subject = f.SubjectFactory(site=site_a, code="A-0042", status=SubjectStatus.ENROLLED)
    consent = None
    if consent_kind is not None:
        consent = f.ConsentFactory(subject=subject, scope_longitudinal_imaging=consent_kind == "all")
    injection = f.InjectionFactory(
        subject=subject,
        batch=f.CellBatchFactory(donor_subject=subject),
        administered_at=timezone.now() - dt.timedelta(hours=40),  # 0 h and 24 h windows closed
    )
    for index, (scan_hours, status) in enumerate(on_file):
        _scan(subject, injection, scan_hours, status=ScanStatus(status), sha="abcdef"[index])
    if withdraw:
        consent_withdraw(
            actor=coordinator_a,
            consent=consent,
            scopes=withdraw,
            reason=REASON,
            withdrawn_at=timezone.now() - dt.timedelta(minutes=5),
        )

    row = next(r for r in records_queries.status_grid(coordinator_a)["rows"] if r.subject.pk == subject.pk)
    cell = row.cells[1 + IMAGING_SCHEDULE_HOURS.index(hours)]
    assert cell.state == state

    uploads = Upload.objects.count()
    refusals = AuditEvent.objects.filter(action=AuditAction.UPLOAD_REFUSED).count()
    request = UploadRequest(
        subject=subject,
        injection_id=injection.pk,
        scanner_id=scanner_at(site_a).pk,
        hours_after_injection=hours,
        sha256="9" * 64,
        filename="next.mdf",
        length=2048,
    )
    try:
        upload_create(actor=coordinator_a, request=request)
        code = ""
    except RuleViolation as exc:
        code = exc.code
    if state in ("withdrawn", "not-consented", "no-consent"):
        assert code in CONSENT_CODES
        assert Upload.objects.count() == uploads
        refused = AuditEvent.objects.filter(action=AuditAction.UPLOAD_REFUSED).latest("sequence")
        assert refused.subject_id == subject.pk and refused.changes == {"code": [None, code]}
    else:
        # Past the consent check; only the scanner's calibration library may still refuse it.
        assert code in ("", "no_system_matrix")
        assert AuditEvent.objects.filter(action=AuditAction.UPLOAD_REFUSED).count() == refusals


def test_no_consent_on_file_is_never_overdue(site_a, coordinator_a, browser_client):
    subject = f.SubjectFactory(site=site_a, code="A-0043", status=SubjectStatus.ENROLLED)
    f.InjectionFactory(
        subject=subject,
        batch=f.CellBatchFactory(donor_subject=subject),
        administered_at=timezone.now() - dt.timedelta(hours=80),
    )
    grid = records_queries.status_grid(coordinator_a)
    row = next(r for r in grid["rows"] if r.subject.pk == subject.pk)
    assert [cell.state for cell in row.cells] == ["done"] + ["no-consent"] * 4
    assert grid["counts"]["overdue"] == 0 and grid["counts"]["no-consent"] == 4
    html = browser_client(coordinator_a).get("/records/status/").content.decode()
    assert "no consent on file" in html and "a scan cannot be uploaded until a consent is recorded" in html
