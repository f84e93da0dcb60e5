"""Imaging staff upload a scan in the browser (tus, chunked, one dropped connection) and
watch it reach "quantified" on a real Celery worker; an investigator reviews and signs
the results; an auditor downloads the report; a user of another site reaches none of it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from compliance.models import Export, Signature
from imaging.models import Scan
from tests import factories as f
from tests.e2e.conftest import SCREENSHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RECORD_VALUES = """
(() => {
  window.__seen = {upload: [], status: []};
  const bar = document.getElementById('upload-progress');
  new MutationObserver(() => window.__seen.upload.push(bar.value)).observe(bar, {childList: true, characterData: true, subtree: true});
  const badge = document.getElementById('scan-badge');
  new MutationObserver(() => window.__seen.status.push(badge.textContent)).observe(badge, {childList: true, characterData: true, subtree: true});
})()
"""


def test_a_scan_is_uploaded_processed_signed_reported_and_hidden_from_other_sites(
    browse, worker, pipeline, investigator_a, auditor, coordinator_b, tmp_path
):
    subject = pipeline.subject
    staff = browse(pipeline.user)
    page = staff.page
    staff.go(f"/subjects/{subject.pk}/")
    page.get_by_role("link", name="Upload a scan").click()
    staff.shot("10-upload-empty")

    # Small chunks so the bar moves through many values; the third PATCH loses its connection.
    page.evaluate("document.getElementById('upload-form').dataset.chunkSize = '16384'")
    page.evaluate(RECORD_VALUES)
    patches = []

    def drop_third_patch(route):
        if route.request.method == "PATCH":
            patches.append(route.request.headers.get("upload-offset"))
            if len(patches) == 3:
                return route.abort("connectionreset")
        return route.continue_()

    page.route("**/api/v1/uploads/**", drop_third_patch)
    page.get_by_label("Hours after injection").fill("24")
    page.set_input_files("#scan-file", pipeline.sim["measurement"])
    page.get_by_role("button", name="Upload").click()
    page.locator("#scan-status").wait_for(state="visible", timeout=30_000)
    page.locator("#scan-badge[data-status='quantified']").wait_for(timeout=150_000)
    staff.shot("11-upload-quantified")

    seen = page.evaluate("window.__seen")
    assert any(0 < v < 100 for v in seen["upload"]) and seen["upload"][-1] == 100, seen
    assert len(set(seen["upload"])) >= 5, seen  # the bar really moved, chunk by chunk
    assert patches[2] == patches[3], patches  # the dropped chunk was sent again from the same offset
    assert "quantified" in seen["status"]
    assert page.locator("#scan-metrics-rows tr").count() == len(pipeline.sim["truth"])
    scan = Scan.objects.get(subject=subject)
    assert scan.status == "quantified"

    page.get_by_role("link", name="Open the scan").click()
    page.wait_for_url(f"**/scans/{scan.pk}/")
    for plane in ("axial", "coronal", "sagittal", "mip"):
        assert page.evaluate(f"document.getElementById('img-{plane}').naturalWidth") > 0, plane
    staff.shot("12-scan-viewer")
    with page.expect_download() as download:
        page.get_by_role("link", name="DICOM study (zip)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert len(archive.namelist()) >= 4
    with page.expect_download() as download:
        page.get_by_role("link", name="Reconstruction (MDF)").click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"

    # The investigator reviews and signs; a wrong password signs nothing.
    investigator = browse(investigator_a)
    ipage = investigator.page
    investigator.go(f"/subjects/{subject.pk}/")
    assert ipage.locator("svg.plot").count() == 2
    investigator.shot("13-subject-timeline-with-plots")
    ipage.get_by_role("link", name=f"#{scan.pk}").click()
    ipage.get_by_label("Meaning").select_option("approval")
    ipage.get_by_label("Password").fill("wrong password")
    ipage.get_by_role("button", name="Sign the results").click()
    assert "password is wrong" in ipage.locator("#id_password_error").inner_text()
    assert Signature.objects.count() == 0
    ipage.get_by_label("Password").fill(f.PASSWORD)
    ipage.get_by_role("button", name="Sign the results").click()
    ipage.wait_for_url(f"**/scans/{scan.pk}/")
    assert "Meaning: Approval" in ipage.locator(".signature").inner_text()
    investigator.shot("14-scan-signed")

    # The auditor asks for the trial report and downloads it once the worker built it.
    audit = browse(auditor)
    apage = audit.page
    apage.get_by_role("link", name="Reports & exports").first.click()
    apage.get_by_label("Kind").select_option("report_pdf")
    apage.get_by_role("button", name="Request").click()
    apage.get_by_role("link", name="Download").wait_for(timeout=90_000)
    audit.shot("15-exports")
    with apage.expect_download() as download:
        apage.get_by_role("link", name="Download").click()
    assert Path(download.value.path()).read_bytes()[:5] == b"%PDF-"
    assert Export.objects.get().status == "ready"
    audit.go("/compliance/audit/")
    audit.shot("16-audit-browser")
    audit.go("/")
    audit.shot("17-dashboard-auditor")

    # Site B's coordinator: every page of site A's objects answers 404.
    other = browse(coordinator_b)
    consent = subject.consents.get()
    batch = pipeline.batch
    urls = [
        f"/subjects/{subject.pk}/",
        f"/subjects/{subject.pk}/consent/",
        f"/subjects/{subject.pk}/injection/",
        f"/subjects/{subject.pk}/upload/",
        f"/consents/{consent.pk}/withdraw/",
        f"/batches/{batch.pk}/label/",
        f"/batches/{batch.pk}/release/",
        f"/scans/{scan.pk}/",
        f"/scans/{scan.pk}/image/mip.png",
        f"/scans/{scan.pk}/image/axial/0.png",
        f"/scans/{scan.pk}/dicom.zip",
        f"/api/v1/scans/{scan.pk}/",
        f"/api/v1/scans/{scan.pk}/reconstruction-file/",
    ]
    for url in urls:
        assert other.go(url).status == 404, url
    other.go("/subjects/")
    assert subject.code not in other.page.content()
    other.shot("18-subjects-site-b")
    assert (SCREENSHOTS / "12-scan-viewer.png").exists()
