"""Imaging staff upload a scan with a time point before the injection: the server refuses
the upload (through tus-core.js), the page puts the reason next to the "Hours after
injection" field and below the progress bar, and nothing is written or kept for resuming."""

from __future__ import annotations

import pytest

from imaging.models import Scan, Upload

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_refused_time_point_is_shown_next_to_its_field(browse, pipeline, tmp_path):
    subject = pipeline.subject
    scan_file = tmp_path / "scan.mdf"
    scan_file.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))
    staff = browse(pipeline.user)
    page = staff.page
    staff.go(f"/subjects/{subject.pk}/upload/")
    page.get_by_label("Hours after injection").fill("-5")
    page.set_input_files("#scan-file", str(scan_file))
    page.get_by_role("button", name="Upload").click()

    error = page.locator("#id_hours + p.errorlist.js-error")
    error.wait_for(timeout=15_000)
    assert "before the injection" in error.inner_text()
    assert error.get_attribute("role") == "alert"
    status = page.locator("#upload-text")
    assert "before the injection" in status.inner_text() and status.get_attribute("class") == "error"
    assert page.locator("#scan-status").is_hidden()
    assert page.get_by_role("button", name="Upload").is_enabled()
    staff.shot("10c-upload-refused")
    assert not Upload.objects.filter(subject=subject).exists()
    assert not Scan.objects.filter(subject=subject).exists()
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('mpi-tus:')).length") == 0

    # Corrected, the next try clears the old field error before it asks again.
    page.get_by_label("Hours after injection").fill("-6")
    with page.expect_response(lambda r: r.request.method == "POST" and "/api/v1/uploads/" in r.url) as refused:
        page.get_by_role("button", name="Upload").click()
    assert refused.value.status == 400
    page.locator("#id_hours + p.js-error").wait_for()
    page.get_by_role("button", name="Upload").wait_for(state="visible")
    page.wait_for_timeout(300)
    assert page.locator("p.js-error").count() == 1
