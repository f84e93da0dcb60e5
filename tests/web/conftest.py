"""A quantified scan at site A, processed in this process by the services (as the tasks
would), for the page tests; the cast and the pipeline come from tests/conftest.py and
tests/imaging/conftest.py."""

from __future__ import annotations

import pytest

from tests.imaging.conftest import define_rois, pipeline, sim, simulate  # noqa: F401 - fixtures
from tests.imaging.helpers import process, uploaded_scan


@pytest.fixture
def quantified(api, pipeline):  # noqa: F811
    scan = process(uploaded_scan(api, pipeline, pipeline.sim["measurement"]))
    assert scan.status == "quantified", scan.status_reason
    return scan


@pytest.fixture
def browser_client(client):
    """``browser_client(user)`` -> Django's test client, logged in as ``user``."""

    def make(user):
        client.force_login(user)
        return client

    return make
