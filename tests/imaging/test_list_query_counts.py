"""Scan lists (with nested metrics), measurements and alerts cost the same number of
queries for 2 rows as for 20."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories as f
from tests.imaging import factories as fi


def _scan_with_metrics(site):
    reconstruction = fi.ReconstructionFactory(
        scan=fi.ScanFactory(
            injection=f.InjectionFactory(batch=f.CellBatchFactory(donor_subject=f.SubjectFactory(site=site)))
        )
    )
    for _ in range(3):
        fi.MeasurementFactory(reconstruction=reconstruction)
    fi.AlertFactory(scan=reconstruction.scan)


@pytest.mark.parametrize("url", ["/api/v1/scans/", "/api/v1/measurements/", "/api/v1/alerts/", "/api/v1/rois/"])
def test_it_runs_a_constant_number_of_queries_per_page(api, site_a, monitor, url):
    client = api(monitor)

    def count(rows):
        while client.get(url, {"page_size": 100}).json()["count"] < rows:
            _scan_with_metrics(site_a)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, {"page_size": rows})
        assert len(response.json()["results"]) == rows
        return len(queries)

    small, large = count(2), count(20)
    assert small == large, f"{url}: {small} queries for 2 rows, {large} for 20"
    assert large <= 4
