"""End to end with a real Celery worker process on the real Redis broker and PostgreSQL:
a scan uploaded in chunks through the API (interrupted once, resumed) is validated,
reconstructed and quantified by the worker, and its metrics match the phantom."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.models import Measurement, Reconstruction, Scan
from tests.imaging import tus
from tests.imaging.helpers import relative_error
from tests.imaging.worker import Worker, purge, wait_for
from tests.services import redis_url, require_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def broker():
    # Autouse, so the skip (or CI failure) comes before any row is written.
    require_postgres()
    url = redis_url()
    purge(url)
    return url


def _status(scan_id):
    return Scan.objects.filter(pk=scan_id).values_list("status", flat=True).first()


def test_it_processes_an_uploaded_scan_on_a_real_worker(api, pipeline, broker, tmp_path):
    worker = Worker("e2e", broker, tmp_path)
    try:
        data = Path(pipeline.sim["measurement"]).read_bytes()
        client = api(pipeline.user)
        created = tus.create(
            client,
            length=len(data),
            subject=pipeline.subject.pk,
            injection=pipeline.injection.pk,
            scanner=pipeline.scanner.pk,
            hours=24,
            sha256=tus.sha256_hex(data),
        )
        url, chunk = created["Location"], 16 * 1024
        for offset in range(0, len(data) // 2, chunk):
            assert tus.patch(client, url, offset=offset, data=data[offset : offset + chunk]).status_code == 204
        # Interrupted: a new client (a new connection) asks for the offset and resumes there.
        client = api(pipeline.user)
        offset = int(tus.head(client, url)["Upload-Offset"])
        assert 0 < offset < len(data)
        last = None
        for start in range(offset, len(data), chunk):
            last = tus.patch(client, url, offset=start, data=data[start : start + chunk])
            assert last.status_code == 204
        scan_id = int(last["Scan-Id"])

        wait_for(
            lambda: _status(scan_id) in ("quantified", "rejected", "failed"),
            timeout=180,
            what=f"scan {scan_id} to be quantified",
            logs=[worker],
        )
        scan = Scan.objects.get(pk=scan_id)
        assert scan.status == "quantified", (scan.status, scan.status_reason)
        sim = pipeline.sim
        injected = sim["injected_iron_ng"]
        target = sum(v for k, v in sim["truth"].items() if sim["kinds"][k] == "target")
        assert relative_error(scan.metrics_summary["retention_percent"], 100 * target / injected) < 0.10
        assert relative_error(scan.metrics_summary["off_target_percent"], 100 * (injected - target) / injected) < 0.15
        assert Reconstruction.objects.filter(scan=scan).count() == 1
        assert Measurement.objects.filter(scan=scan).count() == len(sim["truth"])

        detail = client.get(f"/api/v1/scans/{scan_id}/").json()
        assert detail["status"] == "quantified"
        assert detail["progress"] == {"stage": "quantified", "percent": 100.0}
        assert {m["roi_name"] for m in detail["metrics"]} == set(sim["truth"])
    finally:
        worker.stop()
