"""recon.live's cache (recon.live_cache): what a session's engine needs that depends only on
the calibration, the plan and the ROI set, stored once and loaded at the next start.

- the next build on the same calibration, plan and ROIs reads neither the calibration's rows
  nor its whole file (its SHA-256 given), loads the operator memory-mapped, and gives the same
  numbers as a build without a cache;
- a changed calibration (its SHA-256), plan (λ) or ROI geometry is another key: the engine
  then equals a fresh build with the new inputs (no stale functionals);
- a damaged or truncated entry is refused and rebuilt, never trusted.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import recon.checksum
import recon.live
from recon import live_cache
from recon.checksum import sha256_file
from recon.live import LiveEngine, StreamLayout, prepare
from recon.live_simulate import simulate_injection_stream, stream_fields_from_mdf
from recon.operator import ReconOperator
from recon.params import ReconParams

PARAMS = ReconParams(solver="fast")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = simulate_injection_stream(
        tmp_path_factory.mktemp("cache"), dims=2, num_frames=30, background_frames=(8, 4), lung_fraction=0.2
    )
    with h5py.File(out["stream"], "r") as h5:
        data, bg = h5["/measurement/data"][()], h5["/measurement/isBackgroundFrame"][()].astype(bool)
    layout = StreamLayout.from_fields(stream_fields_from_mdf(out["stream"]), str(data.dtype))
    return {**out, "data": data, "bg": bg, "layout": layout, "sha": sha256_file(out["calibration"])}


def _build(sim, cache, rois=None, params=PARAMS, sha=None):
    return LiveEngine.build(
        sim["calibration"],
        sim["layout"],
        rois if rois is not None else sim["roi_records"],
        operator_cache_dir=cache,
        params=params,
        calibration_sha256=sha if sha is not None else sim["sha"],
    )


def _iron(engine, sim):
    return engine.push(sim["data"], sim["bg"]).iron_ng


def _refuse(*args, **kwargs):
    raise AssertionError("read from the calibration although the cache holds it")


def test_the_second_start_loads_everything_from_the_cache(sim, tmp_path, monkeypatch):
    fresh = _iron(_build(sim, None), sim)
    first = _build(sim, tmp_path)
    np.testing.assert_allclose(_iron(first, sim), fresh, rtol=1e-9, atol=1e-9)
    names = {p.name for p in tmp_path.iterdir()}
    assert any(n.startswith("live-rows-") and n.endswith(".npy") for n in names)
    assert any(n.startswith("live-regions-") and n.endswith(".npz") for n in names)

    # the next start: no read of the calibration's rows, no hash of the file
    monkeypatch.setattr(recon.live, "_read_rows", _refuse)
    monkeypatch.setattr(recon.checksum, "sha256_file", _refuse)
    second = _build(sim, tmp_path)
    assert any("region functionals loaded from cache" in n for n in second.notes)
    assert isinstance(second.operator.matrix.base, np.memmap)  # the operator is memory-mapped
    np.testing.assert_allclose(_iron(second, sim), fresh, rtol=1e-9, atol=1e-9)
    assert second.fingerprint == first.fingerprint  # a checkpoint of the first restores into the second
    np.testing.assert_allclose(second.image(), first.image(), rtol=1e-6, atol=1e-9)


def _moved(records):
    out = [dict(r) for r in records]
    key = next(k for k in ("center_m", "center", "centre_m") if k in out[0])
    out[0][key] = [float(v) + 0.002 for v in out[0][key]]
    return out


def test_keys_change_with_the_calibration_the_plan_and_the_rois(sim, tmp_path):
    plan = PARAMS.as_dict()
    key = live_cache.calibration_key(sim["sha"], plan)
    assert live_cache.calibration_key("0" * 64, plan) != key
    assert live_cache.calibration_key(sim["sha"], PARAMS.replace(lambda_=1e-2).as_dict()) != key
    assert live_cache.calibration_key(sim["sha"], PARAMS.replace(max_rows=50).as_dict()) != key
    assert live_cache.calibration_key(sim["sha"], PARAMS.replace(frames=(0, 3)).as_dict()) == key  # scan-only
    rois = sim["roi_records"]
    assert live_cache.regions_key(key, _moved(rois)) != live_cache.regions_key(key, rois)
    assert live_cache.regions_key(key, rois[:-1]) != live_cache.regions_key(key, rois)


@pytest.mark.parametrize(
    "change",
    [
        {"rois": "moved"},
        {"params": PARAMS.replace(lambda_=1e-2)},
        {"sha": "f" * 64},
    ],
    ids=["roi geometry", "plan", "calibration"],
)
def test_a_changed_input_never_gets_the_old_functionals(sim, tmp_path, change):
    _build(sim, tmp_path)  # fills the cache for the original inputs
    rois = _moved(sim["roi_records"]) if change.get("rois") else None
    params = change.get("params", PARAMS)
    cached = _build(sim, tmp_path, rois=rois, params=params, sha=change.get("sha"))
    assert not any("region functionals loaded from cache" in n for n in cached.notes)
    fresh = _build(sim, None, rois=rois, params=params)
    np.testing.assert_allclose(_iron(cached, sim), _iron(fresh, sim), rtol=1e-9, atol=1e-9)
    if change.get("rois") or change.get("params"):
        assert not np.allclose(_iron(cached, sim), _iron(_build(sim, tmp_path), sim), rtol=1e-6, equal_nan=True)


def _entry(folder, prefix, suffix):
    return next(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix))


def _flip(path, at):
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize(
    "damage",
    ["regions flipped", "regions truncated", "rows flipped", "rows matrix truncated", "operator truncated"],
)
def test_a_damaged_entry_is_rebuilt_not_trusted(sim, tmp_path, damage):
    fresh = _iron(_build(sim, None), sim)
    _build(sim, tmp_path)
    if damage.startswith("regions"):
        path = _entry(tmp_path, "live-regions-", ".npz")
    elif damage == "rows flipped":
        path = _entry(tmp_path, "live-rows-", ".npz")
    elif damage == "rows matrix truncated":
        path = _entry(tmp_path, "live-rows-", ".npy")
    else:
        path = next(p for p in tmp_path.iterdir() if len(p.stem) == 64 and p.suffix == ".npy")
    size = os.path.getsize(path)
    if damage.endswith("flipped"):
        _flip(path, size // 2)
    else:
        os.truncate(path, size // 2)
    if damage.startswith("regions"):
        assert live_cache.load_entry(tmp_path, path.stem) is None
    if damage == "operator truncated":
        assert ReconOperator.load(tmp_path, path.stem, mmap=True) is None
    if damage == "rows matrix truncated":
        assert live_cache.load_array(tmp_path, path.stem) is None
        # the regions entry (still good) serves the next start; a new ROI set needs A: read again
        rebuilt = _build(sim, tmp_path, rois=_moved(sim["roi_records"]))
        assert live_cache.load_array(tmp_path, path.stem) is not None
        np.testing.assert_allclose(
            _iron(rebuilt, sim), _iron(_build(sim, None, rois=_moved(sim["roi_records"])), sim), rtol=1e-9, atol=1e-9
        )
        return
    rebuilt = _build(sim, tmp_path)
    distrusted = "selected calibration rows" if damage == "rows flipped" else "region functionals"
    assert not any(f"{distrusted} loaded from cache" in n for n in rebuilt.notes)
    np.testing.assert_allclose(_iron(rebuilt, sim), fresh, rtol=1e-9, atol=1e-9)
    assert any("region functionals loaded from cache" in n for n in _build(sim, tmp_path).notes)  # repaired


def test_the_calibration_part_alone_warms_the_next_session(sim, tmp_path, monkeypatch):
    fresh = _iron(_build(sim, None), sim)
    prepared = prepare(sim["calibration"], None, params=PARAMS, cache_dir=tmp_path, calibration_sha256=sim["sha"])
    assert prepared.regions is None and prepared.operator.num_rows == 2 * prepared.selection.num_rows
    monkeypatch.setattr(recon.live, "_read_rows", _refuse)
    engine = _build(sim, tmp_path)  # new ROIs: functionals from the cached rows and operator
    assert any("selected calibration rows loaded from cache" in n for n in engine.notes)
    np.testing.assert_allclose(_iron(engine, sim), fresh, rtol=1e-9, atol=1e-9)
