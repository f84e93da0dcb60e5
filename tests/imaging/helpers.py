from __future__ import annotations

from imaging.cache import SystemMatrixCache
from imaging.models import Scan
from imaging.services.scan_steps import scan_quantify, scan_reconstruct, scan_validate
from tests.imaging import tus


def uploaded_scan(api, pipeline, path, *, hours=24.0) -> Scan:
    _, last = tus.upload_file(api(pipeline.user), path, pipeline=pipeline, hours=hours)
    return Scan.objects.get(pk=int(last["Scan-Id"]))


def process(scan: Scan, token: str = "task-1", cache=None) -> Scan:
    """Run the three steps in this process, as the tasks would (services directly)."""
    scan_validate(scan_id=scan.pk, token=token)
    scan_reconstruct(scan_id=scan.pk, token=token, cache=cache or SystemMatrixCache(10**9))
    scan_quantify(scan_id=scan.pk, token=token)
    scan.refresh_from_db()
    return scan


def relative_error(measured: float, truth: float) -> float:
    return abs(measured - truth) / abs(truth)
