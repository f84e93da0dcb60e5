"""Imaging staff find a scan filed under the wrong subject in the upload history and re-file
it with a reason (refused without one); the scan page then shows the correction. The same
person uploads two files at once from the batch page: one is accepted, one refused (no
consent), each with its own result. Screenshots of the record pages for review."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Scan, ScanStatus, SystemMatrix, Upload
from tests import factories as f
from tests.web.scans import scanner_at
from trials.models import SubjectStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REASON = "Uploaded under the code of the neighbouring subject by mistake"


@pytest.fixture
def records(site_a, imaging_a):
    first = f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0010", status=SubjectStatus.ENROLLED)
    f.ConsentFactory(subject=first)
    inj1 = f.InjectionFactory(
        subject=first,
        batch=f.CellBatchFactory(donor_subject=first),
        administered_at=timezone.now() - dt.timedelta(hours=50),
    )
    second = f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0011", status=SubjectStatus.ENROLLED)
    f.ConsentFactory(subject=second)
    inj2 = f.InjectionFactory(
        subject=second,
        batch=f.CellBatchFactory(donor_subject=second, nanoparticle_lot=inj1.batch.nanoparticle_lot),
        administered_at=timezone.now() - dt.timedelta(hours=30),
    )
    third = f.SubjectFactory(site=site_a, code="MPI-CT-T01-A-0012", status=SubjectStatus.ENROLLED)
    inj3 = f.InjectionFactory(
        subject=third, batch=f.CellBatchFactory(donor_subject=third, nanoparticle_lot=inj1.batch.nanoparticle_lot)
    )
    scanner = scanner_at(site_a)
    SystemMatrix.objects.create(
        scanner=scanner,
        name="bench calibration",
        tracer_product=inj1.batch.nanoparticle_lot.product,
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
    done = Scan.objects.create(
        subject=first,
        injection=inj1,
        scanner=scanner,
        hours_after_injection=0.0,
        filename="A-0010-0h.mdf",
        file="imaging/scans/none.mdf",
        size_bytes=4_200_000,
        sha256="d" * 64,
        status=ScanStatus.QUANTIFIED,
        created_by=imaging_a,
    )
    wrong = Scan.objects.create(
        subject=first,
        injection=inj1,
        scanner=scanner,
        hours_after_injection=24.0,
        filename="A-0011-24h.mdf",
        file="imaging/scans/none.mdf",
        size_bytes=4_200_000,
        sha256="e" * 64,
        status=ScanStatus.REJECTED,
        status_reason="No imaging consent in force for this time point.",
        created_by=imaging_a,
    )
    return dict(first=first, second=second, third=third, inj2=inj2, inj3=inj3, done=done, wrong=wrong)


def test_imaging_staff_refile_a_misfiled_scan_with_a_reason(browse, records, imaging_a):
    wrong, second = records["wrong"], records["second"]
    staff = browse(imaging_a)
    page = staff.page
    staff.go("/records/status/")
    page.get_by_role("heading", name="Record status").wait_for()
    staff.shot("records-status-grid")

    page.get_by_role("link", name="Uploads", exact=True).click()
    page.get_by_role("heading", name="Upload history").wait_for()
    staff.shot("records-upload-history")
    page.get_by_role("link", name=f"Re-file scan #{wrong.pk}").click()
    page.get_by_role("heading", name=f"Re-file scan #{wrong.pk}").wait_for()
    page.get_by_label("Subject and injection").select_option(str(records["inj2"].pk))
    page.get_by_label("Hours after injection").fill("24")
    page.get_by_role("button", name="Re-file the scan").click()
    page.get_by_text("This field is required.").first.wait_for()  # no reason: refused on the form
    staff.shot("records-refile-refused")
    wrong.refresh_from_db()
    assert wrong.subject_id == records["first"].pk
    assert not AuditEvent.objects.filter(action=AuditAction.SCAN_REFILED).exists()

    page.get_by_label("Subject and injection").select_option(str(records["inj2"].pk))
    page.get_by_label("Reason").fill(REASON)
    page.get_by_role("button", name="Re-file the scan").click()
    page.wait_for_url(f"**/scans/{wrong.pk}/")
    page.get_by_text(f"re-filed to {second.code} at 24 h").wait_for()
    page.get_by_role("heading", name="Correction history").scroll_into_view_if_needed()
    assert page.get_by_text(REASON).is_visible()
    staff.shot("records-scan-after-refile")
    wrong.refresh_from_db()
    assert wrong.subject_id == second.pk and wrong.status == ScanStatus.RECEIVED
    event = AuditEvent.objects.get(action=AuditAction.SCAN_REFILED)
    assert event.reason == REASON and event.actor_username == imaging_a.username


def test_imaging_staff_upload_two_scans_at_once_each_with_its_own_result(browse, records, imaging_a, tmp_path):
    good, refused = tmp_path / "A-0011-48h.mdf", tmp_path / "A-0012-0h.mdf"
    good.write_bytes(b"\x89HDF fake scan one" * 4000)
    refused.write_bytes(b"\x89HDF fake scan two" * 3000)
    staff = browse(imaging_a)
    page = staff.page
    staff.go("/uploads/batch/")
    page.set_input_files("#batch-files", [str(good), str(refused)])
    rows = page.locator("#batch-rows tr")
    assert rows.count() == 2
    rows.nth(0).locator("select[data-name='injection']").select_option(str(records["inj2"].pk))
    rows.nth(0).locator("input[data-name='hours']").fill("48")
    rows.nth(1).locator("select[data-name='injection']").select_option(str(records["inj3"].pk))
    rows.nth(1).locator("input[data-name='hours']").fill("0")
    page.get_by_role("button", name="Upload all").click()
    page.get_by_text("1 uploaded, 1 not uploaded.").wait_for(timeout=30_000)
    staff.shot("records-batch-upload")
    assert "is being processed" in rows.nth(0).locator(".batch-result").inner_text()
    assert "consent" in rows.nth(1).locator(".batch-result").inner_text()
    scan = Scan.objects.get(subject=records["second"])
    assert scan.hours_after_injection == 48.0 and scan.size_bytes == good.stat().st_size
    assert not Upload.objects.filter(subject=records["third"]).exists()
