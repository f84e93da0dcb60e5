"""Corrupt, truncated, wrong-kind, NaN-filled and mismatched files are rejected with a
specific reason; the original bytes are kept and nothing else is made."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging.models import Measurement, Reconstruction
from imaging.services.scan_steps import scan_reconstruct, scan_validate
from tests.imaging import tus
from tests.imaging.helpers import uploaded_scan


def _corrupt(src: Path, dst: Path) -> None:
    dst.write_bytes(np.random.default_rng(0).bytes(src.stat().st_size))


def _truncated(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])


def _nan_filled(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as h5:
        data = h5["/measurement/data"]
        data[...] = np.full(data.shape, np.nan, dtype=data.dtype)


def _other_dividers(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as h5:
        h5["/acquisition/drivefield/divider"][...] = np.array([[36], [32]])


CASES = {
    "corrupt": (_corrupt, "not_hdf5"),
    "truncated": (_truncated, "truncated"),
    "nan_filled": (_nan_filled, "non_finite"),
    "other_dividers": (_other_dividers, "No active system matrix for scanner Preclinical MPI with dividers 36/32"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_it_rejects_a_bad_file_with_a_specific_reason_and_keeps_the_original(api, pipeline, tmp_path, settings, case):
    make, expected = CASES[case]
    path = tmp_path / f"{case}.mdf"
    make(Path(pipeline.sim["measurement"]), path)
    scan = uploaded_scan(api, pipeline, path)
    events = AuditEvent.objects.count()

    scan_validate(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == "rejected"
    assert expected in scan.status_reason
    assert not scan.retryable
    assert (Path(settings.MEDIA_ROOT) / scan.file).read_bytes() == path.read_bytes()
    assert Reconstruction.objects.count() == 0 and Measurement.objects.count() == 0
    new = list(AuditEvent.objects.filter(sequence__gt=events).order_by("sequence"))
    assert [e.changes["status"] for e in new] == [["received", "validating"], ["validating", "rejected"]]
    assert expected in new[-1].reason
    # A rejected scan goes no further, whatever is queued.
    assert scan_reconstruct(scan_id=scan.pk, token="t") is None


def test_it_rejects_a_calibration_uploaded_as_a_scan(api, pipeline):
    scan = uploaded_scan(api, pipeline, pipeline.sim["system_matrix"])
    scan_validate(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == "rejected"
    assert "calibration MDF, not a measurement" in scan.status_reason
    assert AuditEvent.objects.filter(action=AuditAction.SCAN_STATUS_CHANGED, object_id=str(scan.pk)).count() == 3


def test_it_shows_the_rejection_reason_through_the_api(api, pipeline, tmp_path):
    path = tmp_path / "truncated.mdf"
    _truncated(Path(pipeline.sim["measurement"]), path)
    scan = uploaded_scan(api, pipeline, path)
    scan_validate(scan_id=scan.pk, token="t")
    body = api(pipeline.user).get(f"/api/v1/scans/{scan.pk}/").json()
    assert body["status"] == "rejected"
    assert "truncated" in body["status_reason"]
    assert body["validation_report"]["problems"][0]["code"] == "truncated"


def test_it_rejects_bytes_that_are_not_the_declared_file(api, pipeline, settings):
    """Every chunk arrived under its own checksum, but the whole file is not the one the
    site declared: the ingest task rejects it, naming both digests, and keeps the bytes."""
    data = Path(pipeline.sim["measurement"]).read_bytes()
    declared = tus.sha256_hex(b"another file entirely")
    client = api(pipeline.user)
    created = tus.create(
        client,
        length=len(data),
        subject=pipeline.subject.pk,
        injection=pipeline.injection.pk,
        scanner=pipeline.scanner.pk,
        hours=24,
        sha256=declared,
    )
    assert created.status_code == 201, created.content
    last = tus.patch(client, created["Location"], offset=0, data=data)
    assert last.status_code == 204, last.content
    scan = pipeline.subject.scans.get(pk=last["Scan-Id"])

    scan_validate(scan_id=scan.pk, token="t")
    scan.refresh_from_db()
    assert scan.status == "rejected" and not scan.retryable
    assert declared in scan.status_reason and tus.sha256_hex(data) in scan.status_reason
    assert (Path(settings.MEDIA_ROOT) / scan.file).read_bytes() == data
    assert Reconstruction.objects.count() == 0 and Measurement.objects.count() == 0
