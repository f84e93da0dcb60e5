"""The live engine is prepared when the session is opened, not at the first frame: the
calibration's selected rows, the operator and the subject's region functionals go into the
live cache (``recon.live.prepare``), keyed by the registered ``SystemMatrix.sha256``, so the
worker's build at the stream's start only loads them. Frames that arrive while an engine is
being built are all processed once it is there (nothing lost)."""

from __future__ import annotations

import shutil
import time

import h5py
import numpy as np
import pytest
from django.conf import settings as django_settings

import recon.checksum
import recon.live
from imaging.models import RegionOfInterest, SystemMatrix
from imaging.services.rois import roi_define
from live import runner
from live import worker as live_worker
from live.models import LiveSession, LiveStatus
from live.worker import LiveWorker, prepare_engine
from recon.checksum import sha256_file
from recon.live_simulate import simulate_injection_stream, stream_fields_from_mdf
from tests.live.conftest import events_of, publish
from tests.live.stream import create

BLOCK = 10


def test_opening_a_session_prepares_its_engine(api, pipeline, memory_feed):
    body = create(api(pipeline.user), pipeline.injection.pk, system_matrix=pipeline.system_matrix.pk)
    assert memory_feed.prepared == [body["id"]]
    assert memory_feed.workers == []  # the worker itself starts with the stream


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return simulate_injection_stream(
        tmp_path_factory.mktemp("live-prepare"), dims=2, num_frames=40, lung_fraction=0.3, seed=5
    )


@pytest.fixture
def opened(live, simulated, settings, tmp_path):
    """``live``'s session made an OPEN one on the simulation's calibration and regions."""
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    target = django_settings.MEDIA_ROOT / "imaging" / "system_matrices" / "live-prepare.mdf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(simulated["calibration"], target)
    SystemMatrix.objects.filter(pk=live.session.system_matrix_id).update(
        file="imaging/system_matrices/live-prepare.mdf", sha256=sha256_file(target)
    )
    RegionOfInterest.objects.filter(subject=live.subject).delete()
    for record in simulated["roi_records"]:
        geometry = {k: v for k, v in record.items() if k not in ("name", "kind")}
        roi_define(actor=None, subject=live.subject, name=record["name"], kind=record["kind"], geometry=geometry)
    LiveSession.objects.filter(pk=live.session.pk).update(status=LiveStatus.OPEN)
    return live.session


def _refuse(*args, **kwargs):
    raise AssertionError("the calibration was read or hashed at the stream's start")


def _stream(session, simulated, transport):
    with h5py.File(simulated["stream"], "r") as f:
        data = f["/measurement/data"][()].astype(np.float32)
        background = f["/measurement/isBackgroundFrame"][()].astype(bool)
    fields = stream_fields_from_mdf(simulated["stream"])
    LiveSession.objects.filter(pk=session.pk).update(
        status=LiveStatus.STREAMING,
        header={"protocol": "mpi-live/1", "dtype": "float32", "started_at": time.time(), "fields": fields},
        dtype="float32",
        frame_shape=list(data.shape[1:]),
        frame_duration_s=simulated["frame_duration_s"],
        frames_received=len(data),
        frames_recorded=len(data),
    )
    acquired = time.time() + np.arange(len(data)) * simulated["frame_duration_s"]
    for first in range(0, len(data), BLOCK):
        sl = slice(first, first + BLOCK)
        transport.publish_frames(session.pk, first, data[sl], background[sl], acquired[sl])
    transport.publish_control(session.pk, "end", {"scan": None})
    return background


def test_the_stream_starts_on_the_prepared_engine(opened, simulated, transport, monkeypatch):
    monkeypatch.setattr(recon.checksum, "sha256_file", _refuse)  # the registered SHA-256 is used
    notes = prepare_engine(opened.pk)
    assert any("built and cached" in n for n in notes)
    cache = django_settings.LIVE_OPERATOR_CACHE_DIR
    assert any(p.name.startswith("live-regions-") for p in cache.iterdir())

    background = _stream(opened, simulated, transport)
    monkeypatch.setattr(recon.live, "_read_rows", _refuse)  # nothing is read from the calibration's rows
    worker = LiveWorker(opened.pk, transport)
    assert worker.run() == "ended"
    assert any("region functionals loaded from cache" in n for n in worker.engine.notes)
    metrics = events_of(transport, opened, "metrics")
    assert [m["frame"] for m in metrics] == np.flatnonzero(~background).tolist()


def test_an_idle_live_worker_prepares_open_sessions_once(opened, monkeypatch):
    done: set = set()
    assert runner.prepare_waiting(done) >= 1
    cache = django_settings.LIVE_OPERATOR_CACHE_DIR
    assert any(p.name.startswith("live-regions-") for p in cache.iterdir())
    monkeypatch.setattr(recon.live, "_read_rows", _refuse)
    assert runner.prepare_waiting(done) == 0  # each once per process


def test_a_session_without_a_system_matrix_yet_has_nothing_to_prepare(opened):
    LiveSession.objects.filter(pk=opened.pk).update(system_matrix=None)
    assert prepare_engine(opened.pk) == []


def test_frames_arriving_while_the_engine_builds_are_all_processed(live, transport, engines, monkeypatch):
    t0 = time.time()
    publish(transport, live.session, 0, np.tile([50_000.0, 0.0, 0.0], (BLOCK, 1)), t0=t0)
    slow_build = engines.factory

    def building(*args, **kwargs):
        # the scanner keeps streaming during the build: three more blocks are recorded and published
        for first in range(BLOCK, 4 * BLOCK, BLOCK):
            publish(transport, live.session, first, np.tile([50_000.0, 0.0, 0.0], (BLOCK, 1)), t0=t0)
        transport.publish_control(live.session.pk, "end", {"scan": None})
        return slow_build(*args, **kwargs)

    monkeypatch.setattr(live_worker, "build_engine", building)
    assert LiveWorker(live.session.pk, transport).run() == "ended"
    assert [m["frame"] for m in events_of(transport, live.session, "metrics")] == list(range(4 * BLOCK))
    assert LiveSession.objects.get(pk=live.session.pk).frames_processed == 4 * BLOCK


# --------------------------------------------------------------------------- readiness


def test_the_session_says_when_its_engine_is_ready(opened, api, imaging_a):
    client = api(imaging_a)
    url = f"/api/v1/live-sessions/{opened.pk}/"
    body = client.get(url).json()
    assert (body["engine"], body["engine_prepared_at"]) == ("preparing", None)
    assert "recorded" in body["engine_detail"]

    prepare_engine(opened.pk)
    body = client.get(url).json()
    assert body["engine"] == "ready" and body["engine_prepared_at"] is not None
    assert body["engine_detail"].startswith("Live engine ready")


def test_a_failed_preparation_is_said_on_the_session(opened, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("the calibration has no frequency above the SNR threshold")

    monkeypatch.setattr(recon.live, "_prepare", broken)
    with pytest.raises(ValueError, match="no frequency"):
        prepare_engine(opened.pk)
    opened.refresh_from_db()
    assert opened.engine_prepared_at is None
    assert opened.engine_readiness == (
        "unavailable",
        "Live engine not prepared: the calibration has no frequency above the SNR threshold",
    )


def test_a_subject_without_regions_is_not_ready(opened):
    RegionOfInterest.objects.filter(subject=opened.subject).delete()
    prepare_engine(opened.pk)
    opened.refresh_from_db()
    assert opened.engine_readiness[0] == "unavailable"
    assert "no regions of interest" in opened.engine_readiness[1]


def test_without_a_system_matrix_the_engine_waits_for_the_header(opened):
    LiveSession.objects.filter(pk=opened.pk).update(system_matrix=None)
    opened.refresh_from_db()
    assert opened.engine_readiness[0] == "waiting"


def test_a_worker_that_builds_an_unprepared_engine_says_so_then_marks_it_ready(opened, simulated, transport):
    _stream(opened, simulated, transport)
    assert LiveWorker(opened.pk, transport).run() == "ended"
    health = events_of(transport, opened, "health")
    assert health[0]["monitoring"] == live_worker.PREPARING  # before the build, frames still recorded
    assert health[-1]["monitoring"] == "live"
    opened.refresh_from_db()
    assert opened.engine_readiness[0] == "ready"


def test_a_prepared_engine_sends_no_preparing_health(opened, simulated, transport):
    prepare_engine(opened.pk)
    _stream(opened, simulated, transport)
    assert LiveWorker(opened.pk, transport).run() == "ended"
    assert all(h["monitoring"] != live_worker.PREPARING for h in events_of(transport, opened, "health"))
