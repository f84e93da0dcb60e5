"""Imaging staff start a scan upload, lose the connection part-way, reload the page and
choose the same file again: the tus client asks the server for its offset (HEAD) and goes
on from there, with no second upload created; the one scan reaches "quantified" on the
real Celery worker."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from imaging.models import Scan, Upload

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHUNK = 16384


def _server_offset(subject) -> int:
    upload = Upload.objects.filter(subject=subject).first()
    return upload.offset if upload else 0


def test_an_interrupted_upload_resumes_from_the_server_offset_after_a_reload(browse, worker, pipeline):
    subject = pipeline.subject
    measurement = Path(pipeline.sim["measurement"])
    size = measurement.stat().st_size
    # Let through about a third of the file, then every PATCH loses its connection.
    allowed = max(2, math.ceil(0.3 * size / CHUNK))
    assert allowed * CHUNK < size, (size, allowed)  # the test needs a file larger than what gets through

    staff = browse(pipeline.user)
    page = staff.page
    staff.go(f"/subjects/{subject.pk}/upload/")
    page.evaluate(f"document.getElementById('upload-form').dataset.chunkSize = '{CHUNK}'")
    patches = []

    def cut_after_a_third(route):
        if route.request.method == "PATCH":
            patches.append(int(route.request.headers["upload-offset"]))
            if len(patches) > allowed:
                return route.abort("connectionreset")
        return route.continue_()

    page.route("**/api/v1/uploads/**", cut_after_a_third)
    page.get_by_label("Hours after injection").fill("24")
    page.set_input_files("#scan-file", str(measurement))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Connection lost").wait_for(timeout=30_000)
    deadline = time.monotonic() + 15
    while _server_offset(subject) < allowed * CHUNK and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped_at = _server_offset(subject)
    assert stopped_at == allowed * CHUNK, (stopped_at, allowed, patches)
    assert 0.25 <= stopped_at / size < 1, (stopped_at, size)
    assert not Scan.objects.filter(subject=subject).exists()
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('mpi-tus:')).length") == 1

    # Reload: the client's retry loop dies with the page; the connection is back.
    page.unroute("**/api/v1/uploads/**")
    after = []
    page.on(
        "request",
        lambda r: (
            after.append((r.method, r.url, r.headers.get("upload-offset"))) if "/api/v1/uploads/" in r.url else None
        ),
    )
    page.reload()
    page.evaluate(f"document.getElementById('upload-form').dataset.chunkSize = '{CHUNK}'")
    page.get_by_label("Hours after injection").fill("24")
    page.set_input_files("#scan-file", str(measurement))
    assert "will resume where it stopped" in page.locator("#upload-text").inner_text()
    page.get_by_role("button", name="Upload").click()
    page.locator("#scan-status").wait_for(state="visible", timeout=30_000)
    page.locator("#scan-badge[data-status='quantified']").wait_for(timeout=150_000)
    staff.shot("10b-upload-resumed")

    methods = [m for m, _, _ in after]
    assert "POST" not in methods, after  # no second upload was created
    assert methods[0] == "HEAD", after  # the offset was asked first ...
    first_patch = next(offset for m, _, offset in after if m == "PATCH")
    assert int(first_patch) == stopped_at > 0, (first_patch, stopped_at)  # ... and the upload went on from it
    patch_offsets = [int(o) for m, _, o in after if m == "PATCH"]
    assert patch_offsets == list(range(stopped_at, size, CHUNK)), patch_offsets  # no chunk sent twice after the reload

    upload = Upload.objects.get(subject=subject)
    assert (upload.offset, upload.length) == (size, size)
    scan = Scan.objects.get(subject=subject)
    assert scan.status == "quantified", scan.status_reason
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('mpi-tus:')).length") == 0
