"""recon.live: the live engine on simulated injection streams (recon.live_simulate).

Tolerances, and why:

- per frame against the truth: |live - truth| <= 4 x the frame's noise SD + TRUTH_REL x truth.
  The noise SD is what the engine reports (scatter of the stream's background frames); the
  relative term is the region estimator's own bias on these phantoms (GTM with exact spread:
  within +-4 % on the mouse phantom, recon.quantify's docstring), plus SPILL_REL of all the
  iron in the frame: what the estimator spills from the bright target into its neighbours
  (measured ~0.5 % into the liver, offline as live).
- the mean over foreground frames against the offline pipeline (reconstruct_file with the
  fast solver, the same Tikhonov operator, then quantify_file with the calibration):
  OFFLINE_REL of the offline value + 1 noise SD of the offline mean (its LOD / 3.3) + 1 live
  per-frame noise SD (the background estimates differ by noise of that order). The two
  differ only in the background: offline interpolates between the background blocks before
  and after the foreground, live uses the running mean of those seen so far (the ones
  before), and fits the calibration's empty-bore spectrum where offline fits the scan's.
  With the platform's default plan (regularised Kaczmarz, 10 sweeps) the 2D stream agrees
  within KACZMARZ_REL (Kaczmarz after 10 sweeps is close to, not at, the Tikhonov solution).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from recon.live import LiveEngine, LiveStreamError, StreamLayout, mip
from recon.live_simulate import simulate_injection_stream, stream_fields_from_mdf
from recon.params import ReconParams
from recon.pipeline import reconstruct_file
from recon.quantify import quantify_file

TRUTH_REL = 0.06
OFFLINE_REL = 0.02
KACZMARZ_REL = 0.03
NOISE_FACTOR = 4.0
SPILL_REL = 0.01


def _read(path):
    with h5py.File(path, "r") as h5:
        return h5["/measurement/data"][()], h5["/measurement/isBackgroundFrame"][()].astype(bool)


def _stream(tmp_path_factory, name, **kwargs):
    out = simulate_injection_stream(tmp_path_factory.mktemp(name), **kwargs)
    data, bg = _read(out["stream"])
    layout = StreamLayout.from_fields(stream_fields_from_mdf(out["stream"]), str(data.dtype))
    return {**out, "data": data, "bg": bg, "layout": layout, "truth_array": np.asarray(out["iron_ng"])}


@pytest.fixture(scope="module")
def lung2d(tmp_path_factory):
    return _stream(tmp_path_factory, "lung2d", dims=2, num_frames=60, background_frames=(10, 5), lung_fraction=0.2)


@pytest.fixture(scope="module")
def clean2d(tmp_path_factory):
    return _stream(
        tmp_path_factory, "clean2d", dims=2, num_frames=60, background_frames=(10, 5), lung_fraction=0.0, seed=3
    )


@pytest.fixture(scope="module")
def lung3d(tmp_path_factory):
    return _stream(
        tmp_path_factory,
        "lung3d",
        dims=3,
        grid=(8, 8, 8),
        num_frames=30,
        background_frames=(8, 4),
        lung_fraction=0.2,
        dtype="int16",
    )


@pytest.fixture(scope="module")
def clean2d_blocks(tmp_path_factory):
    """A clean 2D injection long enough for ~30 alert blocks (the demo's kind of stream)."""
    return _stream(
        tmp_path_factory, "clean2dblocks", dims=2, num_frames=300, lung_fraction=0.0, liver_fraction=0.0, seed=11
    )


@pytest.fixture(scope="module")
def clean3d(tmp_path_factory):
    return _stream(
        tmp_path_factory,
        "clean3d",
        dims=3,
        grid=(12, 12, 12),
        num_frames=120,
        background_frames=(8, 4),
        lung_fraction=0.0,
        fine_factor=2,  # the simulator's forward model on a 2x finer grid: a coarser mismatch than its default 3
        seed=11,
    )


def _engine(s, **kwargs):
    return LiveEngine.build(s["calibration"], s["layout"], s["roi_records"], **kwargs)


def _offline(s, tmp_path, params):
    out = tmp_path / "rec.mdf"
    reconstruct_file(s["calibration"], s["stream"], out, params=params)
    return quantify_file(out, s["rois"], system_matrix_path=s["calibration"])


def _check_against_truth(s, res, rel):
    fg = ~s["bg"]
    err = np.abs(res.iron_ng[fg] - s["truth_array"][fg])
    noise = np.sqrt(np.maximum(res.uncertainty_ng[fg] ** 2 - (0.05 * res.iron_ng[fg]) ** 2, 0.0))
    total = s["truth_array"][fg].sum(axis=1, keepdims=True)
    allowed = NOISE_FACTOR * noise + rel * s["truth_array"][fg] + SPILL_REL * total
    worst = np.unravel_index(np.argmax(err - allowed), err.shape)
    assert np.all(err <= allowed), (
        f"frame {worst[0]} region {worst[1]}: live {res.iron_ng[fg][worst]:.1f} vs truth "
        f"{s['truth_array'][fg][worst]:.1f} ng (allowed {allowed[worst]:.1f})"
    )


def _check_against_offline(s, res, q, rel):
    fg = ~s["bg"]
    live_mean = res.iron_ng[fg].mean(axis=0)
    frame_sd = np.median(np.sqrt(np.maximum(res.uncertainty_ng[fg] ** 2 - (0.05 * res.iron_ng[fg]) ** 2, 0.0)), axis=0)
    for j, roi in enumerate(q.rois):
        assert roi.name == s["regions"][j]
        allowed = rel * abs(roi.iron_mass_ng) + roi.detection_limit_ng / 3.3 + frame_sd[j]
        assert abs(live_mean[j] - roi.iron_mass_ng) <= allowed, (roi.name, live_mean[j], roi.iron_mass_ng, allowed)


def test_live_iron_follows_the_truth_and_the_offline_pipeline_2d(lung2d, tmp_path):
    eng = _engine(lung2d)
    res = eng.push(lung2d["data"], lung2d["bg"])
    assert res.iron_ng.shape == (lung2d["data"].shape[0], 4)
    assert np.all(np.isnan(res.iron_ng[lung2d["bg"]])) and np.all(np.isfinite(res.iron_ng[~lung2d["bg"]]))
    assert eng.region_names == ["heart", "lung_left", "lung_right", "liver"]
    assert eng.region_kinds == ["target", "lungs", "lungs", "liver"]
    _check_against_truth(lung2d, res, TRUTH_REL)
    _check_against_offline(lung2d, res, _offline(lung2d, tmp_path, ReconParams(solver="fast")), OFFLINE_REL)
    _check_against_offline(lung2d, res, _offline(lung2d, tmp_path, ReconParams()), KACZMARZ_REL)


def test_live_iron_follows_the_offline_pipeline_3d_int16(lung3d, tmp_path):
    """A small 3D grid (8^3, 3 mm voxels for organs of 2-4 mm semi-axes): the estimator
    itself is biased low there (offline as much as live), so the truth check is loose
    (30 %); the offline comparison is as tight as in 2D."""
    eng = _engine(lung3d)
    res = eng.push(lung3d["data"], lung3d["bg"])
    _check_against_offline(lung3d, res, _offline(lung3d, tmp_path, ReconParams(solver="fast")), OFFLINE_REL)
    fg = ~lung3d["bg"]
    truth, live = lung3d["truth_array"][fg], res.iron_ng[fg]
    last = slice(-5, None)  # injection over: the heart and lungs hold their final iron
    assert np.all(np.abs(live[last, :3] - truth[last, :3]) <= 0.3 * truth[last, :3])


def test_blocks_state_and_restore_give_identical_results(lung2d, tmp_path):
    data, bg = lung2d["data"], lung2d["bg"]
    cuts = [0, 7, 23, 41, data.shape[0]]
    whole = _engine(lung2d).push(data, bg)
    a = _engine(lung2d, operator_cache_dir=tmp_path / "ops")
    blocks = [a.push(data[i:j], bg[i:j]) for i, j in zip(cuts[:-1], cuts[1:], strict=True)]
    joined = np.concatenate([b.iron_ng for b in blocks])
    np.testing.assert_allclose(joined, whole.iron_ng, rtol=1e-9, atol=1e-9)  # blocks do not change the numbers

    b = _engine(lung2d, operator_cache_dir=tmp_path / "ops")  # operator from the cache this time
    assert any("loaded from cache" in n for n in b.notes)
    b.push(data[: cuts[2]], bg[: cuts[2]])
    saved = b.state()
    c = _engine(lung2d, operator_cache_dir=tmp_path / "ops")
    c.restore(saved)
    assert c.frames_seen == cuts[2] and c.background_frames_seen == int(bg[: cuts[2]].sum())
    for i, j in zip(cuts[2:-1], cuts[3:], strict=True):
        r_b, r_c = b.push(data[i:j], bg[i:j]), c.push(data[i:j], bg[i:j])
        np.testing.assert_array_equal(r_b.iron_ng, r_c.iron_ng)
        np.testing.assert_array_equal(r_b.uncertainty_ng, r_c.uncertainty_ng)
    np.testing.assert_array_equal(b.image(last=4), c.image(last=4))
    np.testing.assert_array_equal(b.detection_limit_ng, c.detection_limit_ng)
    with pytest.raises(ValueError, match="not a live engine state"):
        c.restore(b"garbage")
    other = LiveEngine.build(lung2d["calibration"], lung2d["layout"], lung2d["roi_records"][:2])
    with pytest.raises(ValueError, match="another calibration, ROI set"):
        other.restore(saved)
    assert other.frames_seen == 0


def test_image_is_the_clamped_mean_of_the_last_frames_in_ng(lung2d):
    eng = _engine(lung2d)
    assert not eng.image(last=3).any()  # nothing seen yet
    eng.push(lung2d["data"], lung2d["bg"])
    vol = eng.image(last=5)
    assert vol.shape == (20, 20, 1) and vol.min() >= 0
    assert mip(vol, axis=2).shape == (20, 20)
    # the image holds iron where the phantom does: its total is within the linear
    # reconstruction's mass loss (a clamped linear image keeps part of the mass), never more
    total_truth = lung2d["truth_array"][~lung2d["bg"]][-1].sum()
    assert 0.2 * total_truth < vol.sum() < 2.0 * total_truth
    with pytest.raises(ValueError, match="last"):
        eng.image(last=0)


def test_lungs_above_their_detection_limit_after_onset_none_on_a_clean_stream(lung2d, clean2d):
    for s, expect in ((lung2d, True), (clean2d, False)):
        eng = _engine(s)
        res = eng.push(s["data"], s["bg"])
        lod = eng.detection_limit_ng
        off = [j for j, k in enumerate(eng.region_kinds) if k == "lungs"]
        fg = ~s["bg"]
        detected = res.iron_ng[fg][:, off] > lod[off]
        lungs_truth = s["truth_array"][fg][:, 1]
        if expect:
            well_after = lungs_truth > 3 * lod[1]
            assert well_after.sum() >= 10
            assert detected[well_after].all()  # both lungs, every frame once they hold > 3 LOD
            assert not detected[lungs_truth == 0].any()  # and never before any iron got there
        else:
            # 3.3 SD one-sided: ~0.05 % false positives per frame and region; none on this seed.
            # (The liver, not checked here, picks up ~0.5 % of the target's iron as spill-over in
            # this phantom, offline as live: +10-15 ng beside a 3 ug heart, near its 30 ng LOD.)
            assert not detected.any(), np.argwhere(detected)
        assert np.all(lod > 0) and np.all(np.isfinite(lod))


def test_reported_noise_matches_the_scatter_of_empty_regions(clean2d):
    """The per-frame SD the engine reports (from the stream's background frames) is the
    scatter the lungs' estimate really has on a stream that sends them no iron, and the
    calibration's empty-bore estimate (used before 5 stream background frames) agrees."""
    eng = _engine(clean2d)
    from_calibration = eng.noise_sd_ng.copy()
    res = eng.push(clean2d["data"], clean2d["bg"])
    lungs = res.iron_ng[~clean2d["bg"]][:, 1:3]
    ratio = lungs.std(axis=0, ddof=1) / eng.noise_sd_ng[1:3]
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio  # 60 frames: the SD itself scatters ~10 %
    assert np.all((from_calibration / eng.noise_sd_ng > 0.6) & (from_calibration / eng.noise_sd_ng < 1.6))


def test_before_any_stream_background_the_calibration_empty_bore_is_subtracted(lung2d):
    eng = _engine(lung2d)
    assert any("calibration's empty-bore mean" in n for n in eng.notes)
    start = int(np.argmin(lung2d["bg"]))  # the first foreground frame: no background frame sent
    s = {**lung2d, "bg": lung2d["bg"][start:], "truth_array": lung2d["truth_array"][start:]}
    res = eng.push(lung2d["data"][start:], s["bg"])
    assert eng.background_frames_seen == int(s["bg"].sum())
    _check_against_truth(s, res, TRUTH_REL)


def test_frame_rows_are_the_mdf_readers_spectra_with_the_conversion_factor(lung3d):
    """The engine's rfft of raw int16 samples (float32, conversion after it) gives the rows
    ``recon.mdf.MDFFile.spectra`` reads from the file (float64 of converted samples)."""
    import dataclasses

    from recon.mdf import MDFFile

    eng = _engine(lung3d)
    sel = eng.selection
    with MDFFile(lung3d["stream"]) as f:
        ref = f.spectra(periods=[0])[:, 0][:, sel.channel, sel.frequency]
    rows = eng._rows(lung3d["data"])
    scale = np.abs(ref).max()
    np.testing.assert_allclose(rows, ref, rtol=0, atol=1e-6 * scale)
    # an offset b lands on the DC bin only: rfft(a * raw + b) = a * rfft(raw) + b * V at k = 0
    conv = np.array([[2.0, 0.5]] * 3)
    eng.layout = dataclasses.replace(eng.layout, data_conversion_factor=conv)
    eng.selection = dataclasses.replace(sel, channel=np.array([0, 1, 2]), frequency=np.array([0, 0, 5]))
    full = np.fft.rfft(2.0 * lung3d["data"][:2, 0].astype(np.float64) + 0.5, axis=-1)
    expected = full[:, [0, 1, 2], [0, 0, 5]]
    np.testing.assert_allclose(eng._rows(lung3d["data"][:2]), expected, rtol=0, atol=1e-6 * np.abs(full).max())


def test_a_calibration_without_empty_bore_frames_waits_for_the_streams(lung2d, tmp_path):
    """No calibration background: nothing is subtracted and the noise (so the LOD) is
    unknown (NaN) until the stream has sent MIN_BACKGROUND_FOR_SCATTER background frames."""
    import shutil

    from recon.live import MIN_BACKGROUND_FOR_SCATTER

    cal = tmp_path / "no_bg.mdf"
    shutil.copy(lung2d["calibration"], cal)
    with h5py.File(cal, "r+") as h5:
        keep = ~h5["/measurement/isBackgroundFrame"][()].astype(bool)
        data = h5["/measurement/data"][()][..., keep]  # fast frame axis: J x C x K x N
        for name in ("/measurement/data", "/measurement/isBackgroundFrame", "/acquisition/numFrames"):
            del h5[name]
        h5["/measurement/data"] = data
        h5["/measurement/isBackgroundFrame"] = np.zeros(int(keep.sum()), dtype=np.int8)
        h5["/acquisition/numFrames"] = np.int64(keep.sum())
    eng = LiveEngine.build(cal, lung2d["layout"], lung2d["roi_records"])
    assert any("no background subtracted" in n for n in eng.notes)
    assert np.all(np.isnan(eng.detection_limit_ng))
    bg = lung2d["bg"]
    first = eng.push(lung2d["data"][:3], bg[:3])
    assert np.all(np.isnan(first.iron_ng))  # background frames only
    assert np.all(np.isnan(eng.detection_limit_ng))  # 3 < 5 background frames
    res = eng.push(lung2d["data"][3:], bg[3:])
    assert eng.background_frames_seen >= MIN_BACKGROUND_FOR_SCATTER
    assert np.all(np.isfinite(eng.detection_limit_ng))
    # Every calibration column then carries the scanner background (nothing to subtract it
    # with), which biases the small regions by tens of ng: the target is still within 10 %.
    fg = ~bg[3:]
    assert np.all(np.isfinite(res.iron_ng[fg])) and np.all(np.isnan(res.iron_ng[~fg]))
    heart, truth = res.iron_ng[fg][-5:, 0].mean(), lung2d["truth_array"][3:][fg][-5:, 0].mean()
    assert abs(heart - truth) <= 0.1 * truth


# ------------------------------------------------------------------ refusals


def _fields(s):
    return stream_fields_from_mdf(s["stream"])


@pytest.mark.parametrize(
    "path, value, words",
    [
        ("/acquisition/drivefield/divider", [[102], [97]], "dividers"),
        ("/acquisition/receiver/numChannels", 3, "receive channels"),
        ("/acquisition/receiver/numSamplingPoints", 816, "sampling points"),
        ("/acquisition/drivefield/baseFrequency", 2.4e6, "base frequency"),
    ],
)
def test_a_stream_the_calibration_does_not_fit_is_a_system_matrix_mismatch(lung2d, path, value, words):
    fields = _fields(lung2d)
    fields[path] = value
    layout = StreamLayout.from_fields(fields, "float32")
    with pytest.raises(LiveStreamError, match=words) as exc:
        LiveEngine.build(lung2d["calibration"], layout, lung2d["roi_records"])
    assert exc.value.code == "system_matrix_mismatch"


def test_a_calibration_that_needs_a_transfer_function_the_stream_lacks_is_refused(lung2d, tmp_path):
    import shutil

    cal = tmp_path / "tf.mdf"
    shutil.copy(lung2d["calibration"], cal)
    with h5py.File(cal, "r+") as h5:
        del h5["/measurement/isTransferFunctionCorrected"]
        h5["/measurement/isTransferFunctionCorrected"] = np.int8(1)
    with pytest.raises(LiveStreamError, match="transfer function") as exc:
        LiveEngine.build(cal, lung2d["layout"], lung2d["roi_records"])
    assert exc.value.code == "system_matrix_mismatch"


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda f: f.pop("/acquisition/numAverages"), "required fields missing"),
        (lambda f: f.update({"/acquisition/numAverages": "ten"}), "whole number"),
        (lambda f: f.update({"/acquisition/numAverages": True}), "whole number"),
        (lambda f: f.update({"/acquisition/receiver/numChannels": 2.5}), "whole number"),
        (lambda f: f.update({"/acquisition/drivefield/baseFrequency": float("nan")}), "finite"),
        (lambda f: f.update({"/acquisition/receiver/bandwidth": -1.0}), "> 0"),
        (lambda f: f.update({"/acquisition/drivefield/divider": [[102.5], [96]]}), "whole numbers"),
        (lambda f: f.update({"/acquisition/drivefield/divider": [[102], "x"]}), "divider"),
        (lambda f: f.update({"/experiment/notes": list(range(5000))}), "more than 4096"),
        (lambda f: f.update({"/measurement/data": [1, 2]}), "outside the allowed groups"),
        (lambda f: f.update({f"/study/x{i}": i for i in range(200)}), "at most 200"),
        (
            lambda f: f.update(
                {"/acquisition/receiver/numSamplingPoints": 2**22, "/acquisition/numPeriodsPerFrame": 8}
            ),
            "exceeds the limit",
        ),
        (lambda f: f.update({"/acquisition/receiver/dataConversionFactor": [[1.0, 0.0]]}), "2 numbers"),
        (lambda f: f.update({"/experiment/deep": [[[[[[[[[[1]]]]]]]]]]}), "nested deeper"),
        (lambda f: f.update({"/experiment/obj": {"a": 1}}), "is not a JSON"),
        (lambda f: f.update({"/acquisition/receiver/numChannels": 0}), "between 1 and 64"),
        (lambda f: f.update({"/acquisition/drivefield/divider": ["a", "b"]}), "numbers only"),
        (lambda f: f.update({"/acquisition/drivefield/divider": [[[102]], [[96]]]}), "D or D x F"),
        (lambda f: f.update({"/acquisition/receiver/dataConversionFactor": [[0.0, 0.0], [1.0, 0.0]]}), "a != 0"),
    ],
)
def test_bad_header_fields_are_a_bad_stream_header(lung2d, change, words):
    fields = _fields(lung2d)
    change(fields)
    with pytest.raises(LiveStreamError, match=words) as exc:
        StreamLayout.from_fields(fields, "float32")
    assert exc.value.code == "bad_stream_header"


def test_header_scalars_may_come_as_one_element_lists(lung2d):
    fields = _fields(lung2d)
    fields["/acquisition/receiver/numChannels"] = [2]
    fields["/acquisition/drivefield/baseFrequency"] = [2.5e6]
    assert StreamLayout.from_fields(fields, "int16").frame_shape == (1, 2, 1632)
    with pytest.raises(LiveStreamError, match="object of MDF paths"):
        StreamLayout.from_fields([("a", 1)], "int16")


def test_build_and_push_refuse_what_they_cannot_use(lung2d):
    with pytest.raises(ValueError, match="whiten"):
        _engine(lung2d, params=ReconParams(solver="fast", weighting="whiten"))
    with pytest.raises(ValueError, match="no ROIs"):
        LiveEngine.build(lung2d["calibration"], lung2d["layout"], [])
    twice = [lung2d["roi_records"][0], lung2d["roi_records"][0]]
    with pytest.raises(ValueError, match="unique"):
        LiveEngine.build(lung2d["calibration"], lung2d["layout"], twice)
    eng = _engine(lung2d, memory_budget_mb=1)  # a 1 MiB budget: fewer rows, still an engine
    assert eng.selection.num_rows < _engine(lung2d).selection.num_rows
    with pytest.raises(ValueError, match="numbers"):
        eng.push(lung2d["data"][:2].astype(np.complex64), lung2d["bg"][:2])
    empty = eng.push(lung2d["data"][:0], lung2d["bg"][:0])
    assert empty.iron_ng.shape == (0, 4) and eng.frames_seen == 0
    with pytest.raises(ValueError, match="nx, ny, nz"):
        mip(np.zeros((3, 3)))


def test_the_simulator_refuses_impossible_streams(tmp_path):
    from recon.live_simulate import injection_time_course

    with pytest.raises(ValueError, match="num_frames"):
        injection_time_course(0)
    with pytest.raises(ValueError, match="sum to <= 1"):
        injection_time_course(10, lung_fraction=0.7, liver_fraction=0.5)
    with pytest.raises(ValueError, match="dose_ng"):
        injection_time_course(10, dose_ng=0.0)
    with pytest.raises(ValueError, match="dtype"):
        simulate_injection_stream(tmp_path, dtype="int8")
    with pytest.raises(ValueError, match="background_frames"):
        simulate_injection_stream(tmp_path, background_frames=(-1, 0))
    with pytest.raises(ValueError, match="grid"):
        simulate_injection_stream(tmp_path, grid=(4, 4))


def test_a_bad_dtype_is_a_bad_stream_header(lung2d):
    with pytest.raises(LiveStreamError, match="dtype") as exc:
        StreamLayout.from_fields(_fields(lung2d), "complex64")
    assert exc.value.code == "bad_stream_header"


def test_layout_figures_follow_the_header(lung2d):
    lay = lung2d["layout"]
    assert lay.frame_shape == (1, 2, 1632) and lay.dividers == (102, 96)
    assert lay.frame_duration_s == pytest.approx(1632 / 2.5e6)  # the cycle field; = lcm(102, 96) / f_base
    fields = _fields(lung2d)
    del fields["/acquisition/drivefield/cycle"]
    fields["/acquisition/numAverages"] = 10
    fields["/acquisition/numPeriodsPerFrame"] = 2
    lay2 = StreamLayout.from_fields(fields, "int16")
    assert lay2.frame_duration_s == pytest.approx(1632 / 2.5e6 * 10 * 2)
    assert lay2.frame_nbytes == 2 * 2 * 1632 * 2


def test_non_finite_samples_are_refused_and_nothing_is_counted(lung2d):
    eng = _engine(lung2d)
    eng.push(lung2d["data"][:3], lung2d["bg"][:3])
    frames = lung2d["data"][3:6].astype(np.float32)
    frames[1, 0, 1, 7] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite samples \(NaN or inf\) in block frame\(s\) \[1\]"):
        eng.push(frames, lung2d["bg"][3:6])
    assert eng.frames_seen == 3
    with pytest.raises(ValueError, match="expected"):
        eng.push(frames[:, :, :1], lung2d["bg"][3:6])
    with pytest.raises(ValueError, match="is_background"):
        eng.push(lung2d["data"][3:6], np.zeros(3, dtype=np.int64))


def test_truth_file_and_cli(tmp_path):
    from recon.cli import main

    rc = main(["simulate-stream", str(tmp_path), "--dims", "2", "--frames", "12", "--lung-fraction", "0.1"])
    assert rc == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(truth["iron_ng"]) == len(truth["is_background"]) == 12 + 15
    assert truth["lung_fraction"] == 0.1
    assert {p.name for p in tmp_path.iterdir()} >= {"calibration.mdf", "stream.mdf", "rois.json", "truth.json"}
    final = np.asarray(truth["iron_ng"])[~np.asarray(truth["is_background"])][-1]
    assert final.sum() == pytest.approx(truth["dose_ng"])


BLOCK = 9  # frames per alert block (~0.2 s at 46.4 frames/s), as live.monitoring averages them


def _block_means(values: np.ndarray) -> np.ndarray:
    n = len(values) // BLOCK * BLOCK
    return values[:n].reshape(-1, BLOCK, values.shape[1]).mean(axis=1)


@pytest.mark.parametrize("name", ["clean2d_blocks", "clean3d"])
def test_spill_over_from_the_target_is_not_detected_as_off_target_iron(name, request):
    """A clean injection: the lungs and liver get no iron, but the model mismatch (the
    simulator's sub-voxel forward model is not the calibration's) leaks part of the heart's
    iron into their estimates: 0.2-0.7 % in 2D, above the noise limit of a block mean in a
    sixth of the blocks (the demo's false "off-target iron detected" 5 s into its injection);
    1-2 % in 3D, there below zero. With the spill-over bound nothing is detected, per frame
    or per block, and the heart always is."""
    s = request.getfixturevalue(name)
    eng = _engine(s)
    res = eng.push(s["data"], s["bg"])
    off = [j for j, k in enumerate(eng.region_kinds) if k != "target"]
    target = [j for j, k in enumerate(eng.region_kinds) if k == "target"]
    iron = res.iron_ng[~s["bg"]]
    blocks = _block_means(iron)
    noise_only = blocks[:, off] > (eng.detection_limit_ng / np.sqrt(BLOCK))[off]
    if name == "clean2d_blocks":
        assert noise_only.any(axis=1).mean() > 0.1  # the leak the spill-over bound is for
    assert not (blocks[:, off] > eng.detection_limits_ng(blocks, BLOCK)[:, off]).any()
    assert not (iron[:, off] > eng.detection_limits_ng(iron)[:, off]).any()
    lit = iron[:, target[0]] > 0.1 * iron[:, target[0]].max()
    assert (iron[lit][:, target] > eng.detection_limits_ng(iron[lit])[:, target]).all()  # the heart is detected
    # The bound: each off-target region's leak per ng of heart, under a few percent.
    assert np.all((eng.spill[target[0], off] > 0.001) & (eng.spill[target[0], off] < 0.05)), eng.spill
    assert np.all(np.diag(eng.spill) == 0)


def test_lung_iron_is_detected_once_above_the_spill_over_of_the_heart(lung3d):
    eng = _engine(lung3d)
    res = eng.push(lung3d["data"], lung3d["bg"])
    fg = ~lung3d["bg"]
    iron, truth = res.iron_ng[fg], lung3d["truth_array"][fg]
    limits = eng.detection_limits_ng(iron)
    lungs = [j for j, k in enumerate(eng.region_kinds) if k == "lungs"]
    clear = truth[:, lungs[0]] > 2 * limits[:, lungs[0]]  # well above noise and spill-over
    assert clear.sum() >= 5
    assert (iron[clear][:, lungs] > limits[clear][:, lungs]).all()
    assert not (iron[truth[:, lungs[0]] == 0][:, lungs] > limits[truth[:, lungs[0]] == 0][:, lungs]).any()
