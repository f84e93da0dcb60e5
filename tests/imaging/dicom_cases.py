"""A real quantified scan (simulated, uploaded and processed like a site's) for the DICOM tests."""

from __future__ import annotations

import pytest

from tests.imaging.helpers import process, uploaded_scan


@pytest.fixture
def quantified(api, pipeline):
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    assert scan.status == scan.Status.QUANTIFIED, scan.status_reason
    return scan
