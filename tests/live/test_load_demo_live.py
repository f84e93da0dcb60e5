"""The demo's live injection: a streaming scanner with its calibration, the subject's regions
and a simulated stream whose dose is the injection's own iron; twice is the same as once."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import h5py
import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.actions import AuditAction
from audit.models import AuditEvent
from imaging import selectors
from imaging.models import RegionOfInterest, Scanner, SystemMatrix
from live.dose import MIN_FRACTION, dose_so_far, planned_duration
from live.management.commands.load_demo_live import PLANNED_DURATION_REASON, SCANNER_NAME, num_averages
from trials.models import Injection


def _load(tmp_path, *extra):
    out = io.StringIO()
    call_command("load_demo_live", "--frames", "40", "--output", str(tmp_path / "stream"), "--json", *extra, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_it_prepares_a_stream_the_demo_injection_can_take_and_is_idempotent(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    call_command("load_demo", stdout=io.StringIO())
    demo = _load(tmp_path)

    injection = Injection.objects.get(pk=demo["injection"])
    scanner = Scanner.objects.get(pk=demo["scanner"])
    assert scanner.name == SCANNER_NAME and scanner.site_id == injection.subject.site_id
    calibration = SystemMatrix.objects.get(pk=demo["system_matrix"], scanner=scanner, active=True)
    assert calibration.tracer_product == injection.batch.nanoparticle_lot.product
    kinds = sorted(RegionOfInterest.objects.filter(subject=injection.subject).values_list("kind", flat=True))
    assert kinds == ["liver", "lungs", "lungs", "target"]
    truth = json.loads(Path(demo["truth"]).read_text())
    # The stream carries the injection's own dose, in frames as long as the 3D reference's.
    assert truth["dose_ng"] == pytest.approx(selectors.injected_iron_ng(injection), rel=1e-12)
    assert truth["frame_duration_s"] == pytest.approx(0.02154, rel=0.01)
    with h5py.File(demo["stream"], "r") as f:
        assert int(f["/acquisition/numAverages"][()]) == num_averages(2) == 33
        is_bg = f["/measurement/isBackgroundFrame"][()].astype(bool)
        assert f["/measurement/data"].shape[0] == 40 + is_bg.sum() and is_bg[0] and not is_bg[-30]
    lungs = np.asarray(truth["iron_ng"])[:, [k == "lungs" for k in truth["kinds"]]].sum(axis=1)
    assert lungs.max() > 0.2 * truth["dose_ng"]  # enough in the lungs to cross the 20 % threshold

    again = _load(tmp_path)
    assert again == demo
    assert (
        Scanner.objects.filter(name=SCANNER_NAME).count() == 1
        and SystemMatrix.objects.filter(scanner=scanner).count() == 1
    )
    assert RegionOfInterest.objects.filter(subject=injection.subject).count() == 4


def test_the_demo_injection_is_planned_over_the_simulated_injections_duration(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    settings.LIVE_INJECTION_EXPECTED_S = 600.0
    call_command("load_demo", stdout=io.StringIO())
    demo = _load(tmp_path)

    truth = json.loads(Path(demo["truth"]).read_text())
    start, stop = truth["injection_start_frame"], truth["injection_stop_frame"]
    simulated = (stop - start) * truth["frame_duration_s"]  # 20 frames of 40 at about 21.5 ms
    injection = Injection.objects.get(pk=demo["injection"])
    assert float(injection.planned_duration_s) == pytest.approx(simulated, abs=5e-4)
    assert demo["planned_duration_s"] == pytest.approx(simulated, abs=5e-4)
    assert planned_duration(injection).from_record
    # Recorded through the correction service: audited with the old and new value and its reason.
    event = AuditEvent.objects.get(action=AuditAction.INJECTION_UPDATED, object_id=str(injection.pk))
    assert event.changes == {"planned_duration_s": [None, str(injection.planned_duration_s)]}
    assert event.reason == PLANNED_DURATION_REASON
    assert event.actor.username == "coordinator_a"

    # In the demo stream, with its start and stop marks, the percent of the dose so far shows
    # once 5 % of the dose is in (with the 600 s default it would not before the stop mark).
    marks = [("injection_start", start), ("injection_stop", stop)]
    whole = selectors.injected_iron_ng(injection)

    def percent_at(frame, expected_s):
        so_far = dose_so_far(
            marks, frame, whole_ng=whole, frame_duration_s=truth["frame_duration_s"], expected_s=expected_s
        )
        return so_far.percent(whole * 0.01)

    shown = [f for f in range(start, stop) if percent_at(f, planned_duration(injection).seconds) is not None]
    assert shown and shown[0] - start + 1 == pytest.approx(MIN_FRACTION * (stop - start), abs=1)
    assert all(percent_at(f, 600.0) is None for f in range(start, stop))

    _load(tmp_path)  # again: the record already has it, nothing more written
    assert AuditEvent.objects.filter(action=AuditAction.INJECTION_UPDATED).count() == 1
    injection.refresh_from_db()
    assert injection.planned_duration_s == Decimal(str(demo["planned_duration_s"])).quantize(Decimal("0.001"))


def test_it_refuses_without_the_demo_trial(db, tmp_path):
    with pytest.raises(CommandError, match="run load_demo first"):
        _load(tmp_path)
