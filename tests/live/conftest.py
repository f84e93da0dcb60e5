"""Fixtures of the live ingest path: the scan pipeline's subject at site A (scanner, the
simulated calibration in the library, injection, ROIs: ``tests.imaging.conftest``), the
simulated measurement as a stream (its header fields, its frames), the in-memory
transport emptied for each test, and the live worker's start recorded instead of run
(these tests check what the ingest path hands on, not the worker)."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from live import feed
from live.transport import get_transport, reset_memory_transport
from tests.imaging.conftest import nothing_changed, pipeline, sim, simulate  # noqa: F401 - fixtures
from tests.live.stream import header_fields


@pytest.fixture
def memory_feed(settings, monkeypatch):
    """The in-memory transport, empty, and ``live.feed``'s worker start recorded instead of
    run: ``memory_feed.get()`` is the transport, ``memory_feed.workers`` lists each
    ensure_worker call. For tests of what the ingest path hands on (the worker's own
    tests run it)."""
    settings.LIVE_TRANSPORT = "memory"
    reset_memory_transport()
    workers: list[int] = []
    monkeypatch.setattr(feed, "_ensure_worker", workers.append)
    yield SimpleNamespace(get=get_transport, workers=workers)
    reset_memory_transport()


@pytest.fixture(scope="session")
def stream(sim):  # noqa: F811 - the imported fixture, asked for by name
    """The simulated measurement as the bridge streams it: header fields and frames."""
    with h5py.File(sim["measurement"], "r") as h5:
        frames = np.asarray(h5["/measurement/data"])
        background = np.asarray(h5["/measurement/isBackgroundFrame"]).astype(bool)
    fields = header_fields(sim["measurement"])
    header = {
        "protocol": "mpi-live/1",
        "dtype": "float32",
        "started_at": 1.7e9,
        "source": {"kind": "replay", "filename": "measurement.mdf", "measurement_uuid": None},
        "fields": fields,
    }
    return SimpleNamespace(header=header, frames=frames, background=background, count=frames.shape[0])
