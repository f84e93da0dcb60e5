"""The record pages (web/records_views.py): the subject-by-time-point status grid, the
correction history on the record's own page, the upload history, re-filing a scan (page
and API), the batch upload page. Site-scoped; identity corrections only for PHI roles."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Scan, ScanStatus, SystemMatrix
from tests import factories as f
from tests.web.scans import scanner_at
from trials.models import SubjectStatus
from trials.services.identity import subject_identity_set
from trials.services.lots import lot_correct

REASON = "Uploaded under the code of the neighbouring subject by mistake"


def _scan(subject, injection, hours, status=ScanStatus.QUANTIFIED, sha="a"):
    return Scan.objects.create(
        subject=subject,
        injection=injection,
        scanner=scanner_at(subject.site),
        hours_after_injection=hours,
        filename=f"{subject.code}-{hours:g}h.mdf",
        file="imaging/scans/none.mdf",
        size_bytes=2048,
        sha256=sha * 64,
        status=status,
    )


@pytest.fixture
def grid(site_a, site_b):
    """At site A: one subject injected 30 h ago with the 0 h scan done (24 h overdue, 48
    and 72 h expected), one not injected, one withdrawn without injection; at site B one."""
    injected = f.SubjectFactory(site=site_a, code="A-0001", status=SubjectStatus.ENROLLED)
    injection = f.InjectionFactory(
        subject=injected,
        batch=f.CellBatchFactory(donor_subject=injected),
        administered_at=timezone.now() - dt.timedelta(hours=30),
    )
    scan = _scan(injected, injection, 0.5)
    waiting = f.SubjectFactory(site=site_a, code="A-0002", status=SubjectStatus.ENROLLED)
    for consented in (injected, waiting):
        f.ConsentFactory(subject=consented)
    withdrawn = f.SubjectFactory(site=site_a, code="A-0003", status=SubjectStatus.WITHDRAWN)
    other = f.SubjectFactory(site=site_b, code="B-0001")
    return injected, scan, waiting, withdrawn, other


def _cells(html: str, code: str) -> str:
    row = html.split(f">{code}</a>")[1].split("</tr>")[0]
    return row


def test_the_status_grid_shows_done_overdue_expected_and_not_applicable(grid, browser_client, coordinator_a):
    injected, scan, waiting, withdrawn, other = grid
    page = browser_client(coordinator_a).get("/records/status/")
    assert page.status_code == 200
    html = page.content.decode()
    row = _cells(html, "A-0001")
    states = [part.split('"')[0] for part in row.split('class="grid-cell state-')[1:]]
    assert states == ["done", "done", "overdue", "expected", "expected"]
    assert f'href="/scans/{scan.pk}/"' in row
    assert [p.split('"')[0] for p in _cells(html, "A-0002").split("grid-cell state-")[1:]] == ["expected"] * 5
    assert [p.split('"')[0] for p in _cells(html, "A-0003").split("grid-cell state-")[1:]] == ["not-applicable"] * 5
    assert "B-0001" not in html  # another site's subject
    assert "Status</a>" in html  # linked from the navigation


def test_a_monitor_sees_every_site_in_the_grid(grid, browser_client, monitor):
    html = browser_client(monitor).get("/records/status/").content.decode()
    assert "A-0001" in html and "B-0001" in html


def test_the_lot_page_shows_its_correction_history(browser_client, trial_manager, trial):
    lot = f.NanoparticleLotFactory(trial=trial)
    old = lot.iron_mg_per_ml
    lot_correct(actor=trial_manager, lot=lot, reason="Certificate says 28.0 mg/mL", iron_mg_per_ml=Decimal("28.0"))
    html = browser_client(trial_manager).get(f"/lots/{lot.pk}/edit/").content.decode()
    assert "Correction history" in html
    assert "Certificate says 28.0 mg/mL" in html and "trial_manager" in html
    assert f"<del>{Decimal(old).quantize(Decimal('0.0001'))}</del>" in html and "<ins>28.0000</ins>" in html


def test_identity_corrections_show_only_to_roles_that_may_read_identity(
    ready, browser_client, coordinator_a, imaging_a
):
    subject, _, _ = ready
    subject_identity_set(
        actor=coordinator_a,
        subject=subject,
        full_name="Erika Musterfrau",
        date_of_birth=dt.date(1970, 1, 2),
        medical_record_number="MRN0042137",
        reason="Surname misspelt at enrolment",
    )
    coordinator_page = browser_client(coordinator_a).get(f"/subjects/{subject.pk}/").content.decode()
    assert "Surname misspelt at enrolment" in coordinator_page and "full_name" in coordinator_page
    assert "Musterfrau" not in coordinator_page  # the trail keeps fingerprints, never the values
    imaging_page = browser_client(imaging_a).get(f"/subjects/{subject.pk}/").content.decode()
    assert "Surname misspelt" not in imaging_page and "full_name" not in imaging_page
    assert "identity corrected" in imaging_page


@pytest.fixture
def misfiled(site_a):
    """A scan of subject 1 that belongs to subject 2 (same site, both consented)."""
    first = f.SubjectFactory(site=site_a, code="A-0010")
    f.ConsentFactory(subject=first)
    inj1 = f.InjectionFactory(subject=first, batch=f.CellBatchFactory(donor_subject=first))
    second = f.SubjectFactory(site=site_a, code="A-0011")
    f.ConsentFactory(subject=second)
    inj2 = f.InjectionFactory(subject=second, batch=f.CellBatchFactory(donor_subject=second))
    scan = _scan(first, inj1, 24.0, status=ScanStatus.REJECTED)
    _calibration(scan.scanner, inj2.batch.nanoparticle_lot.product)
    return scan, second, inj2


def _calibration(scanner, tracer_product):
    """A library row for the tracer (no file: the pipeline is not run here)."""
    return SystemMatrix.objects.create(
        scanner=scanner,
        name="bench calibration",
        tracer_product=tracer_product,
        file="imaging/none.mdf",
        size_bytes=1,
        sha256="c" * 64,
        validation_report={},
        grid_size=[12, 12, 1],
        field_of_view_m=[0.02, 0.02, 0.001],
        field_of_view_center_m=[0, 0, 0],
        frequencies_count=10,
        receive_channels=2,
        snr_summary={},
        delta_concentration_mol_per_l=0.1,
        base_frequency_hz=2.5e6,
        dividers=[102, 96, 99],
        drive_amplitudes_t=[0.012, 0.012, 0.012],
    )


def test_the_upload_history_lists_scans_with_a_refile_link_for_uploaders(
    misfiled, browser_client, imaging_a, investigator_a, coordinator_b
):
    scan, _, _ = misfiled
    html = browser_client(imaging_a).get("/uploads/").content.decode()
    assert scan.filename in html and f"/scans/{scan.pk}/refile/" in html
    html = browser_client(investigator_a).get("/uploads/").content.decode()
    assert scan.filename in html and f"/scans/{scan.pk}/refile/" not in html
    assert scan.filename not in browser_client(coordinator_b).get("/uploads/").content.decode()


def test_refiling_from_the_page_moves_the_scan_and_audits_it(misfiled, browser_client, imaging_a):
    scan, second, inj2 = misfiled
    client = browser_client(imaging_a)
    assert client.get(f"/scans/{scan.pk}/refile/").status_code == 200
    answer = client.post(f"/scans/{scan.pk}/refile/", {"injection": inj2.pk, "hours": "48", "reason": REASON})
    assert answer.status_code == 302
    scan.refresh_from_db()
    assert (scan.subject_id, scan.injection_id, scan.hours_after_injection) == (second.pk, inj2.pk, 48.0)
    assert scan.status == ScanStatus.RECEIVED  # validated again against the new injection
    event = AuditEvent.objects.get(action=AuditAction.SCAN_REFILED)
    assert event.reason == REASON and event.changes["subject_code"] == ["A-0010", "A-0011"]
    # The history on the scan's own page.
    html = client.get(f"/scans/{scan.pk}/").content.decode()
    assert "Correction history" in html and REASON in html
    assert f"/scans/{scan.pk}/refile/" in html  # the link for those who may re-file


def test_refiling_without_a_reason_is_refused_on_the_form(misfiled, browser_client, imaging_a):
    scan, second, inj2 = misfiled
    answer = browser_client(imaging_a).post(f"/scans/{scan.pk}/refile/", {"injection": inj2.pk, "hours": "48"})
    assert answer.status_code == 400
    scan.refresh_from_db()
    assert scan.subject_id != second.pk
    assert not AuditEvent.objects.filter(action=AuditAction.SCAN_REFILED).exists()


def test_the_refile_page_is_404_for_other_sites_and_other_roles(
    misfiled, browser_client, coordinator_b, investigator_a
):
    scan, _, _ = misfiled
    assert browser_client(coordinator_b).get(f"/scans/{scan.pk}/refile/").status_code == 404
    assert browser_client(investigator_a).get(f"/scans/{scan.pk}/refile/").status_code == 404
    assert f"/scans/{scan.pk}/refile/" not in browser_client(investigator_a).get(f"/scans/{scan.pk}/").content.decode()


def test_the_refile_api(misfiled, api, imaging_a, coordinator_b, site_b):
    scan, second, inj2 = misfiled
    body = {"subject": second.pk, "injection": inj2.pk, "hours": 48, "reason": REASON}
    assert api(coordinator_b).post(f"/api/v1/scans/{scan.pk}/refile/", body, format="json").status_code == 404
    answer = api(imaging_a).post(f"/api/v1/scans/{scan.pk}/refile/", body, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["subject"] == second.pk and answer.json()["hours_after_injection"] == 48.0
    assert AuditEvent.objects.filter(action=AuditAction.SCAN_REFILED, object_id=str(scan.pk)).count() == 1


def test_the_refile_api_refuses_a_subject_without_consent(misfiled, api, imaging_a, site_a):
    scan, _, _ = misfiled
    third = f.SubjectFactory(site=site_a)
    inj3 = f.InjectionFactory(subject=third, batch=f.CellBatchFactory(donor_subject=third))
    body = {"subject": third.pk, "injection": inj3.pk, "hours": 24, "reason": REASON}
    answer = api(imaging_a).post(f"/api/v1/scans/{scan.pk}/refile/", body, format="json")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "consent_missing"
    scan.refresh_from_db()
    assert scan.subject_id != third.pk


def test_the_batch_upload_page_offers_each_injection_of_the_uploaders_sites(
    misfiled, browser_client, imaging_a, monitor
):
    scan, second, inj2 = misfiled
    html = browser_client(imaging_a).get("/uploads/batch/").content.decode()
    assert f'value="{inj2.pk}" data-subject="{second.pk}"' in html
    assert "tus-core.js" in html and "batch-upload.js" in html
    assert browser_client(monitor).get("/uploads/batch/").status_code == 404


def test_the_grid_and_the_upload_history_cost_the_same_queries_for_more_subjects(site_a, browser_client, coordinator_a):
    client = browser_client(coordinator_a)
    client.get("/records/status/")  # the session settles on the first page

    def queries(path):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    def more(n):
        for _ in range(n):
            subject = f.SubjectFactory(site=site_a)
            injection = f.InjectionFactory(subject=subject, batch=f.CellBatchFactory(donor_subject=subject))
            _scan(subject, injection, 24.0, sha=str(subject.pk % 10))

    more(2)
    few = {path: queries(path) for path in ("/records/status/", "/uploads/")}
    more(6)
    assert {path: queries(path) for path in few} == few
