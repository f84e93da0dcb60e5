"""The live worker with the real engine (recon.live) on a simulated injection whose lungs
take 30 % of the dose: metrics for every foreground frame, the region iron near the
truth, and the off-target alert soon after the true crossing of the trial's threshold."""

from __future__ import annotations

import shutil
import time

import h5py
import numpy as np
import pytest
from django.conf import settings as django_settings

from imaging.models import RegionOfInterest, SystemMatrix
from imaging.services.rois import roi_define
from live.models import LiveAlert, LiveSession
from live.worker import LiveWorker
from recon.live_simulate import simulate_injection_stream, stream_fields_from_mdf
from tests.live.conftest import events_of

BLOCK = 10
FRAMES = 120
# The live estimate of the final frames' region iron is within this of the truth (a
# provisional number: single frames at the simulation's noise, drift included).
IRON_TOLERANCE = 0.25
# Frames from the true threshold crossing to the alert: 3 blocks of sustain + the noise of
# the share near the threshold.
ALERT_WITHIN_FRAMES = 6 * BLOCK


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return simulate_injection_stream(
        tmp_path_factory.mktemp("live-real"), dims=2, num_frames=FRAMES, lung_fraction=0.3, seed=3
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean injection (nothing reaches the lungs or liver) of 300 frames: the 2D kind of
    stream whose heart leaks into the lungs' estimate above a block mean's noise limit."""
    return simulate_injection_stream(
        tmp_path_factory.mktemp("live-clean"), dims=2, num_frames=300, lung_fraction=0.0, liver_fraction=0.0, seed=11
    )


def _run(live, transport, simulated, settings, tmp_path):
    """The simulated stream through a LiveWorker with the real engine, on the simulation's
    calibration and regions, the injection carrying its dose."""
    settings.LIVE_OPERATOR_CACHE_DIR = tmp_path / "operators"
    session = live.session
    pg = float(live.injection.batch.iron_per_cell_pg)
    live.injection.administered_cells = round(float(np.max(simulated["injected_ng"])) * 1000 / pg)
    live.injection.save()
    target = django_settings.MEDIA_ROOT / "imaging" / "system_matrices" / "live-sim.mdf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(simulated["calibration"], target)
    SystemMatrix.objects.filter(pk=session.system_matrix_id).update(file="imaging/system_matrices/live-sim.mdf")
    RegionOfInterest.objects.filter(subject=live.subject).delete()
    for record in simulated["roi_records"]:
        geometry = {k: v for k, v in record.items() if k not in ("name", "kind")}
        roi_define(actor=None, subject=live.subject, name=record["name"], kind=record["kind"], geometry=geometry)
    with h5py.File(simulated["stream"], "r") as f:
        data = f["/measurement/data"][()]
        background = f["/measurement/isBackgroundFrame"][()].astype(bool)
    fields = stream_fields_from_mdf(simulated["stream"])
    LiveSession.objects.filter(pk=session.pk).update(
        header={"protocol": "mpi-live/1", "dtype": "float32", "started_at": time.time(), "fields": fields},
        dtype="float32",
        frame_shape=list(data.shape[1:]),
        frame_duration_s=simulated["frame_duration_s"],
        frames_received=len(data),
        frames_recorded=len(data),
    )
    t0 = time.time()
    acquired = t0 + np.arange(len(data)) * simulated["frame_duration_s"]
    for first in range(0, len(data), BLOCK):
        sl = slice(first, first + BLOCK)
        transport.publish_frames(session.pk, first, data[sl].astype(np.float32), background[sl], acquired[sl])
    transport.publish_control(session.pk, "end", {"scan": None})
    assert LiveWorker(session.pk, transport).run() == "ended"
    return background


def test_a_clean_injection_raises_no_off_target_alert(live, transport, clean, settings, tmp_path):
    """Nothing reaches the lungs or liver: no off-target alert, though the heart's iron leaks
    into their estimates (detection limits with the spill-over bound, recon.live)."""
    _run(live, transport, clean, settings, tmp_path)
    kinds = set(LiveAlert.objects.filter(session=live.session).values_list("kind", flat=True))
    assert not kinds & {"off_target_detected", "off_target_share"}, kinds
    metrics = events_of(transport, live.session, "metrics")
    off = [n for n, k in zip(clean["regions"], clean["kinds"], strict=True) if k != "target"]
    shown = [m["rois"][n] for m in metrics for n in off]
    assert not any(r["iron_ng"] > r["detection_limit_ng"] for r in shown)  # never shown as detected
    assert all(m["off_target_percent"] in (None, 0.0) for m in metrics)


def test_real_engine_metrics_and_alert(live, transport, simulated, settings, tmp_path):
    session = live.session
    background = _run(live, transport, simulated, settings, tmp_path)

    metrics = events_of(transport, session, "metrics")
    assert [m["frame"] for m in metrics] == np.flatnonzero(~background).tolist()
    truth = np.asarray(simulated["iron_ng"])
    names = simulated["regions"]
    last = metrics[-5:]
    for r, name in enumerate(names):
        live_iron = np.mean([m["rois"][name]["iron_ng"] for m in last])
        true_iron = truth[[m["frame"] for m in last], r].mean()
        assert live_iron == pytest.approx(true_iron, rel=IRON_TOLERANCE, abs=0.02 * truth.max())
    kinds = np.asarray(simulated["kinds"])
    lungs = truth[:, kinds == "lungs"].sum(axis=1)
    total = truth.sum(axis=1)
    share = np.divide(lungs, total, out=np.zeros_like(lungs), where=total > 0) * 100
    crossing = int(np.flatnonzero(share > 20.0)[0])
    alert = LiveAlert.objects.get(session=session, kind="off_target_share")
    assert crossing <= alert.frame <= crossing + ALERT_WITHIN_FRAMES
    assert alert.value_percent > 20.0 and alert.threshold_percent == 20.0
    assert events_of(transport, session)[-1] == {"type": "ended", "scan": None, "status": "ended"}
    assert LiveSession.objects.get(pk=session.pk).engine_state
