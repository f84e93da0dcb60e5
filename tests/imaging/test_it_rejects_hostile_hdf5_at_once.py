"""Issue #12: a tiny upload whose datasets declare far more than the file stores is
rejected at once with a specific reason, in the ingest task and in the web request that
takes an ROI label volume; nothing of the declared size is ever read."""

from __future__ import annotations

import hashlib
import io
import time
import tracemalloc
from pathlib import Path

import pytest

from imaging.models import Measurement, Reconstruction, RegionOfInterest
from imaging.services.scan_steps import scan_validate
from tests.imaging.helpers import uploaded_scan
from tests.recon import hostile

FAST_S = 3.0  # generous; the unchecked validation walked the declared terabyte for about an hour
PEAK_BYTES = 64 * 2**20


def _measured(call):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = call()
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, elapsed, peak


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "build, code",
    [
        (hostile.unallocated_measurement, "unbacked_data"),
        (hostile.chunked_measurement, "declared_too_large"),
    ],
)
def test_it_rejects_a_tiny_scan_declaring_a_terabyte_in_well_under_a_second(
    api, pipeline, tmp_path, settings, build, code
):
    path = build(Path(pipeline.sim["measurement"]), tmp_path / "hostile.mdf")
    assert path.stat().st_size < 200_000
    scan = uploaded_scan(api, pipeline, path)

    _, elapsed, peak = _measured(lambda: scan_validate(scan_id=scan.pk, token="t"))

    scan.refresh_from_db()
    assert scan.status == "rejected" and not scan.retryable
    assert f"{code} at /measurement/data" in scan.status_reason
    assert scan.validation_report["problems"][0]["code"] == code
    assert elapsed < FAST_S and peak < PEAK_BYTES, (elapsed, peak)
    stored = Path(settings.MEDIA_ROOT) / scan.file
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    assert Reconstruction.objects.count() == 0 and Measurement.objects.count() == 0


def test_it_takes_the_declared_size_limit_from_settings(api, pipeline, settings):
    scan = uploaded_scan(api, pipeline, pipeline.sim["measurement"])
    settings.IMAGING_MAX_DECLARED_BYTES = 1000
    scan_validate(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == "rejected"
    assert "declared_too_large" in scan.status_reason and "limit of 1000 bytes" in scan.status_reason


def _post_label_volume(client, pipeline, data: bytes, name: str):
    upload = io.BytesIO(data)
    upload.name = name
    return client.post(
        "/api/v1/rois/",
        {"subject": pipeline.subject.pk, "name": "drawn", "kind": "target", "label_volume": upload, "label_value": 1},
        format="multipart",
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "name, build, says",
    [
        ("labels.mdf", lambda p: hostile.label_volume_mdf(p, voxels=400**3), "stores none"),
        ("labels.npy", lambda p: hostile.huge_npy(p, elements=10**11), "declares 800000000000 bytes"),
    ],
)
def test_it_refuses_a_label_volume_declaring_a_huge_array_in_the_request(
    api, pipeline, tmp_path, nothing_changed, name, build, says
):
    data = build(tmp_path / name).read_bytes()
    assert len(data) < 40_000
    client = api(pipeline.user)
    rois = RegionOfInterest.objects.count()

    with nothing_changed():
        response, elapsed, peak = _measured(lambda: _post_label_volume(client, pipeline, data, name))

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_label_volume"
    assert says in error["message"]
    assert elapsed < FAST_S and peak < PEAK_BYTES, (elapsed, peak)
    assert RegionOfInterest.objects.count() == rois


def test_a_label_volume_within_the_limits_is_still_accepted(api, pipeline, settings):
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ones((12, 12, 1), dtype=np.int32))
    response = _post_label_volume(api(pipeline.user), pipeline, buffer.getvalue(), "labels.npy")
    assert response.status_code == 201, response.content
    settings.IMAGING_LABEL_VOLUME_MAX_BYTES = 100
    response = _post_label_volume(api(pipeline.user), pipeline, buffer.getvalue(), "other.npy")
    assert response.status_code == 400 and "limit of 100 bytes" in response.json()["error"]["message"]
