"""Pipeline: file path vs array path, reproducibility, plan serialisation, bad input."""

import json

import numpy as np
import pytest

from recon.mdf import MDFFile
from recon.params import ReconParams
from recon.pipeline import load_arrays, reconstruct_arrays, reconstruct_file
from recon.simulate import simulate_to_files

# The file stores float32; the array path computes in float64 here.
FILE_VS_ARRAY_RTOL = 1e-6
PARAMS = ReconParams(dtype="float64", iterations=4)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_to_files(
        tmp_path_factory.mktemp("pipe"), dims=2, frames=6, seed=11, fast=True, grid=(12, 12, 1), empty_bore_frames=4
    )


def test_it_gives_the_same_volume_from_files_and_from_arrays(sim, tmp_path):
    out = tmp_path / "out.mdf"
    stages = []
    reconstruct_file(
        sim["system_matrix"], sim["measurement"], out, PARAMS, progress=lambda stage, frac: stages.append((stage, frac))
    )
    with MDFFile(out) as f:
        stored, meta = f.reconstruction()
    arrays = reconstruct_arrays(params=PARAMS, **load_arrays(sim["system_matrix"], sim["measurement"]))
    assert stored.shape == (6, 144, 1)
    scale = np.abs(arrays.concentration_mol_per_l).max()
    np.testing.assert_allclose(stored[..., 0], arrays.concentration_mol_per_l, rtol=0, atol=FILE_VS_ARRAY_RTOL * scale)
    assert meta["size"] == [12, 12, 1] and meta["unit"] == "mol/L" and meta["order"] == "xyz"
    assert ("solve", 1.0) in stages and stages[-1] == ("write", 1.0)


def test_it_reproduces_a_reconstruction_bit_for_bit(sim, tmp_path):
    r1 = reconstruct_file(sim["system_matrix"], sim["measurement"], tmp_path / "a.mdf", ReconParams())
    r2 = reconstruct_file(sim["system_matrix"], sim["measurement"], tmp_path / "b.mdf", ReconParams())
    np.testing.assert_array_equal(r1.concentration_mol_per_l, r2.concentration_mol_per_l)


def test_it_stores_the_plan_and_the_input_checksums(sim, tmp_path):
    params = ReconParams(solver="fast", lambda_=3e-3, channels=(0, 1), frames=(5, 9), average=2, background="mean")
    result = reconstruct_file(sim["system_matrix"], sim["measurement"], tmp_path / "p.mdf", params)
    with MDFFile(tmp_path / "p.mdf") as f:
        _, meta = f.reconstruction()
    record = meta["parameters"]
    assert ReconParams.from_dict(record["params"]) == params
    assert ReconParams.from_json(params.to_json()) == params
    assert len(record["inputs"]["measurement"]["sha256"]) == 64
    assert record["frame_groups"] == [[5, 6], [7, 8]] == result.frame_groups
    assert record["software"]["recon"]


def test_it_uses_an_external_empty_bore_scan(sim, tmp_path):
    params = ReconParams(background=sim["empty_bore"], iterations=4)
    result = reconstruct_file(sim["system_matrix"], sim["measurement"], None, params)
    assert "empty-bore" in " ".join(result.notes)
    assert result.concentration_mol_per_l.shape == (6, 144)


def test_it_rejects_an_empty_frequency_selection(sim, tmp_path):
    with pytest.raises(ValueError, match=r"empty frequency selection: 0 of 2x409 rows pass snr_threshold=1000000000.0"):
        reconstruct_file(sim["system_matrix"], sim["measurement"], tmp_path / "x.mdf", ReconParams(snr_threshold=1e9))
    assert not (tmp_path / "x.mdf").exists()


def test_it_rejects_arrays_of_mismatched_shapes(sim):
    arrays = load_arrays(sim["system_matrix"], sim["measurement"])
    arrays["measurement_spectra"] = arrays["measurement_spectra"][:, :, :100]
    with pytest.raises(ValueError, match=r"measurement_spectra has shape \(16, 2, 100\), expected \(N, 2, 409\)"):
        reconstruct_arrays(**arrays)


def test_it_rejects_nan_in_the_scan(sim):
    arrays = load_arrays(sim["system_matrix"], sim["measurement"])
    arrays["measurement_spectra"][7, 0, :] = np.nan
    with pytest.raises(ValueError, match="measurement contains .* non-finite values"):
        reconstruct_arrays(**arrays)


def test_it_rejects_a_grid_that_does_not_match(sim):
    arrays = load_arrays(sim["system_matrix"], sim["measurement"])
    arrays["size"] = (12, 11, 1)
    with pytest.raises(ValueError, match=r"size \(12, 11, 1\) holds 132 voxels, the system matrix has 144"):
        reconstruct_arrays(**arrays)


def test_it_refuses_unknown_plan_keys():
    with pytest.raises(ValueError, match=r"unknown reconstruction parameters: \['lambda'\]"):
        ReconParams.from_json(json.dumps({"lambda": 1e-3}))


def test_it_loses_no_iron_when_frames_are_combined(sim):
    """The quantitative frames are linear: their mean is the reconstruction of the mean
    measurement (no clamp before the frames are combined); only the display keeps positivity."""
    arrays = load_arrays(sim["system_matrix"], sim["measurement"])
    per_frame = reconstruct_arrays(params=PARAMS, **arrays)
    averaged = reconstruct_arrays(params=PARAMS.replace(average=6), **arrays)
    mean_of_frames = per_frame.linear_frames_mol_per_l.mean(axis=0)
    scale = np.abs(mean_of_frames).max()
    np.testing.assert_allclose(averaged.linear_frames_mol_per_l[0], mean_of_frames, rtol=0, atol=1e-9 * scale)
    assert per_frame.linear_frames_mol_per_l.min() < 0  # noise and ringing kept, unbiased
    assert per_frame.concentration_mol_per_l.min() >= 0  # the display keeps positivity


def test_it_stores_the_linear_frames_and_the_resolution(sim, tmp_path):
    from recon.quantify import LINEAR_FRAMES_FIELD, read_reconstruction

    out = tmp_path / "out.mdf"
    result = reconstruct_file(sim["system_matrix"], sim["measurement"], out, PARAMS)
    with MDFFile(out) as f:
        stored = read_reconstruction(f)
        assert f.field(LINEAR_FRAMES_FIELD).shape == (6, 144)
    assert stored.linear
    np.testing.assert_allclose(stored.frames, result.linear_frames_mol_per_l, rtol=1e-6, atol=1e-12)
    voxel_m = np.asarray(result.field_of_view_m) / np.asarray(result.size)
    fwhm = np.asarray(stored.resolution_fwhm_m)
    assert 0.5 * voxel_m[0] < fwhm[0] < 6 * voxel_m[0] and fwhm[2] == 0.0


def test_it_rebuilds_the_exact_region_spread_from_the_calibration(sim, tmp_path):
    """GTM columns from the stored plan and the calibration: a noise-free image of a
    region at uniform concentration is that concentration times its spread."""
    from recon import preprocess, solvers
    from recon.pipeline import region_spread, region_spread_arrays
    from recon.quantify import read_reconstruction

    out = tmp_path / "out.mdf"
    reconstruct_file(sim["system_matrix"], sim["measurement"], out, PARAMS)
    with MDFFile(out) as f:
        stored = read_reconstruction(f)
    masks = np.zeros((2, 144))
    masks[0, 30:34] = 1.0
    masks[1, 100:103] = 0.5
    spread = region_spread(sim["system_matrix"], stored.parameters, masks)
    arrays = load_arrays(sim["system_matrix"], sim["measurement"])
    sel = preprocess.select_rows(arrays["snr"], arrays["frequencies_hz"], PARAMS, arrays["system_matrix"].shape[0])
    s = arrays["system_matrix"][sel.channel, sel.frequency]
    s = s - arrays["system_matrix_background"][sel.channel, sel.frequency].mean(axis=-1)[:, None]
    lam = solvers.absolute_lambda(solvers.stack_real(s, None, "float64"), PARAMS.lambda_)
    direct = region_spread_arrays(s, masks, PARAMS, lam, (12, 12, 1))
    np.testing.assert_allclose(spread, direct, rtol=1e-6, atol=1e-9 * np.abs(direct).max())
    with pytest.raises(ValueError, match="not the calibration this image was reconstructed with"):
        region_spread(sim["measurement"], stored.parameters, masks)


def test_it_counts_the_background_noise_common_to_every_frame():
    """40 foreground frames between two blocks of 10 background frames, interpolated: each
    block weighs 0.5 / 10 per frame in the mean background, so the variance of the mean
    image grows by 1 + 40 · 20 · 0.05² = 3."""
    from recon.pipeline import background_noise_factor

    is_bg = np.r_[np.ones(10, bool), np.zeros(40, bool), np.ones(10, bool)]
    groups = [np.array([n]) for n in range(10, 50)]
    assert background_noise_factor(is_bg, groups, ReconParams()) == pytest.approx(3.0)
    assert background_noise_factor(is_bg, groups, ReconParams(background="mean")) == pytest.approx(1 + 40 / 20)
    assert background_noise_factor(is_bg, groups, ReconParams(background="none")) == 1.0


def test_it_says_when_quantification_lacks_the_calibration(sim, tmp_path):
    from recon.quantify import quantify_file

    out = tmp_path / "out.mdf"
    reconstruct_file(sim["system_matrix"], sim["measurement"], out, PARAMS)
    approximate = quantify_file(out, sim["rois"])
    exact = quantify_file(out, sim["rois"], system_matrix_path=sim["system_matrix"])
    assert any(n.startswith("APPROXIMATE") for n in approximate.notes)
    assert not any(n.startswith("APPROXIMATE") for n in exact.notes)
    assert any("spread from the reconstruction operator" in n for n in exact.notes)
    with pytest.raises(ValueError, match="no such calibration file"):
        quantify_file(out, sim["rois"], system_matrix_path=tmp_path / "missing.mdf")
