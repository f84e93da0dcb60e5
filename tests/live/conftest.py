"""Fixtures of the live tests.

The ingest path: the scan pipeline's subject at site A (scanner, the simulated
calibration in the library, injection, ROIs: ``tests.imaging.conftest``), the simulated
measurement as a stream (its header fields, its frames), the in-memory transport emptied
for each test, and the live worker's start recorded instead of run (``memory_feed``:
these tests check what the ingest path hands on, not the worker).

The live worker: a streaming session at site A with the subject's regions (heart:
target, liver, lungs), the in-memory transport (``transport``), and a fake engine whose
region iron is what the test puts in the frames (sample r of a frame = the iron of
region r, ng)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from django.utils import timezone

from imaging.services.rois import roi_define
from live import feed
from live.models import LiveSession
from live.transport import get_transport, reset_memory_transport
from tests import factories as f
from tests.imaging.conftest import nothing_changed, pipeline, sim, simulate  # noqa: F401 - fixtures
from tests.imaging.factories import ScannerFactory, SystemMatrixFactory
from tests.live.stream import header_fields


@pytest.fixture
def memory_feed(settings, monkeypatch):
    """The in-memory transport, empty, and ``live.feed``'s worker start recorded instead of
    run: ``memory_feed.get()`` is the transport, ``memory_feed.workers`` lists each
    ensure_worker call, ``memory_feed.prepared`` each ensure_prepared call. For tests of what the ingest path hands on (the worker's own
    tests run it)."""
    settings.LIVE_TRANSPORT = "memory"
    reset_memory_transport()
    workers: list[int] = []
    prepared: list[int] = []
    monkeypatch.setattr(feed, "ensure_worker", workers.append)
    monkeypatch.setattr(feed, "ensure_prepared", prepared.append)
    yield SimpleNamespace(get=get_transport, workers=workers, prepared=prepared)
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


FRAME_S = 0.0215  # one 3D Lissajous frame
# In the engine's order (the regions by name): frame sample r is the iron of REGIONS[r].
REGIONS = (("heart", "target"), ("liver", "liver"), ("lungs", "lungs"))
GEOMETRY = {"shape": "sphere", "center_m": [0.0, 0.0, 0.0], "radius_m": 0.004}


class FakeEngine:
    """The engine interface (recon.live.LiveEngine) with iron read straight from the frames."""

    def __init__(self, records: list[dict], lod_ng: float | list[float]):
        self.region_names = [r["name"] for r in records]
        self.region_kinds = [r["kind"] for r in records]
        self.records = records
        self._lod = np.broadcast_to(np.asarray(lod_ng, dtype=float), (len(records),)).copy()
        self.frames_seen = 0
        self.background_frames_seen = 0
        self.last: np.ndarray | None = None
        self.restored: dict | None = None
        self.spill = np.zeros((len(records), len(records)))  # no spill-over between the fake's regions

    @property
    def detection_limit_ng(self) -> np.ndarray:
        return self._lod

    def push(self, frames, is_background):
        frames = np.asarray(frames)
        n, r = frames.shape[0], len(self.region_names)
        iron = frames[:, 0, 0, :r].astype(np.float64)
        iron[is_background] = np.nan
        self.frames_seen += n
        self.background_frames_seen += int(np.sum(is_background))
        if (~is_background).any():
            self.last = iron[~is_background][-1]
        return SimpleNamespace(iron_ng=iron, uncertainty_ng=np.abs(iron) * 0.1 + 1.0, is_background=is_background)

    def image(self, last: int = 1) -> np.ndarray:
        vol = np.zeros((6, 5, 3))
        if self.last is not None:
            vol[2, 3, 1] = float(np.nansum(self.last))
        return vol

    def state(self) -> bytes:
        return json.dumps({"frames_seen": self.frames_seen, "bg": self.background_frames_seen}).encode()

    def restore(self, state: bytes) -> None:
        self.restored = json.loads(bytes(state))
        self.frames_seen = self.restored["frames_seen"]
        self.background_frames_seen = self.restored["bg"]


@pytest.fixture
def transport(settings):
    """The in-memory transport, empty (also where CI's broker is Redis: these tests are of
    the worker, the transport has its own tests over both)."""
    settings.LIVE_TRANSPORT = "memory"
    reset_memory_transport()
    yield get_transport()
    reset_memory_transport()


@pytest.fixture
def engines():
    """``engines.factory`` for LiveWorker(engine_factory=...); ``engines.built`` the engines."""
    built: list[FakeEngine] = []
    lod = {"value": 10.0}

    def factory(calibration_path, fields, dtype, roi_records, *, operator_cache_dir, calibration_sha256=None):
        engine = FakeEngine(roi_records, lod["value"])
        built.append(engine)
        return engine

    return SimpleNamespace(factory=factory, built=built, lod=lod)


@pytest.fixture
def live(ready, site_a, imaging_a):
    """A streaming session of an injection of 125,000 ng Fe (10^7 cells x 12.5 pg) with
    the subject's regions heart (target), liver, lungs; trial threshold 20 %."""
    subject, _consent, batch = ready
    injection = f.InjectionFactory(batch=batch, subject=subject, administered_cells=10_000_000)
    scanner = ScannerFactory(site=site_a)
    matrix = SystemMatrixFactory(scanner=scanner)
    for name, kind in REGIONS:
        roi_define(actor=None, subject=subject, name=name, kind=kind, geometry=dict(GEOMETRY))
    session = LiveSession.objects.create(
        injection=injection,
        subject=subject,
        scanner=scanner,
        system_matrix=matrix,
        status=LiveSession.Status.STREAMING,
        header={"protocol": "mpi-live/1", "dtype": "float32", "started_at": time.time(), "fields": {}},
        frame_shape=[1, 1, len(REGIONS)],
        dtype="float32",
        frame_duration_s=FRAME_S,
        created_by=imaging_a,
        started_at=timezone.now(),
    )
    return SimpleNamespace(session=session, subject=subject, injection=injection, injected_ng=125_000.0)


def record(session: LiveSession, count: int) -> None:
    """What the ingest path does before it publishes: the frames are recorded."""
    LiveSession.objects.filter(pk=session.pk).update(frames_received=count, frames_recorded=count)


def publish(transport, session, first: int, iron_rows, *, background=None, t0: float | None = None) -> np.ndarray:
    """Publish frames first.. whose region iron is ``iron_rows`` (n, R); acquired_at one
    frame duration apart, ending now (or from ``t0``)."""
    rows = np.asarray(iron_rows, dtype=np.float32)
    n = rows.shape[0]
    frames = np.zeros((n, 1, 1, rows.shape[1]), dtype=np.float32)
    frames[:, 0, 0, :] = rows
    bg = np.zeros(n, dtype=bool) if background is None else np.asarray(background, dtype=bool)
    start = (time.time() - (first + n) * FRAME_S) if t0 is None else t0
    acquired = start + (first + np.arange(n)) * FRAME_S
    record(session, first + n)
    transport.publish_frames(session.pk, first, frames, bg, acquired)
    return acquired


def events_of(transport, session, kind: str | None = None) -> list[dict]:
    out = [e for _, e in transport.read_events(session.pk, None, block_ms=0)]
    return [e for e in out if kind is None or e["type"] == kind]


@pytest.fixture(autouse=True)
def _fresh_slice_access():
    """live.slices keeps a viewer's checked access for seconds: never from one test to the next."""
    from live.slices import forget_access

    forget_access()
    yield
    forget_access()
