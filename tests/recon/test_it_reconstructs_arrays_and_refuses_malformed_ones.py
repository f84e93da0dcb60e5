"""The array path (``reconstruct_arrays``) on a small exact system: a linear solve
recovers the image, a 4-D scan (periods) reads period 0, an empty-bore scan is
subtracted, the calibration SNR comes from its background frames; malformed arrays
and stored plans are refused with a message naming what is wrong."""

import re

import numpy as np
import pytest

from recon.params import ReconParams
from recon.pipeline import (
    background_spread_arrays,
    reconstruct_arrays,
    region_spread,
    region_spread_arrays,
)

C, K, SIZE = 1, 12, (2, 2, 1)
P = 4
FREQS = np.arange(K) * 20e3  # rows at >= 80 kHz: indices 4 … 11
X_TRUE = np.array([1.0, 0.0, 0.5, 2.0])
#: Tikhonov bias at lambda_ = 1e-9 on a well-conditioned 16 x 4 system
LINEAR_TOL = 1e-6
LINEAR = ReconParams(solver="cgnr", lambda_=1e-9, positivity=False, background="none", dtype="float64", snr_threshold=0)


def _system(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((C, K, P)) + 1j * rng.standard_normal((C, K, P))


def _scan(s, frames=3):
    return np.tile(s @ X_TRUE, (frames, 1, 1))  # (N, C, K)


def test_it_recovers_an_exact_image_and_reads_period_zero_of_a_four_dimensional_scan():
    s = _system()
    u = _scan(s)
    result = reconstruct_arrays(s, u, frequencies_hz=FREQS, size=SIZE, params=LINEAR)
    assert result.num_frames == 3
    np.testing.assert_allclose(result.linear_frames_mol_per_l[0], X_TRUE, atol=LINEAR_TOL)
    # CGNR is not one of the linear solvers: its frames come from linear Kaczmarz, the display from CGNR
    assert "quantitative frames from linear Kaczmarz (cgnr is not linear): display from cgnr" in result.notes
    np.testing.assert_allclose(result.concentration_mol_per_l[0], X_TRUE, atol=LINEAR_TOL)
    assert result.volume(1)[1, 1, 0] == pytest.approx(X_TRUE[3], abs=LINEAR_TOL)  # ix=1, iy=1 is p = 1 + 2 * 1
    record = result.as_dict()
    assert record["frames"] == 3 and record["size"] == [2, 2, 1] and record["output"] is None
    assert record["max_concentration_mol_per_l"] == pytest.approx(2.0, abs=LINEAR_TOL)
    assert record["selection"]["frequency_index"] == list(range(4, 12))
    assert set(result.extra_fields()) == {"/reconstruction/_linearFrames"}  # no background: no background rows
    periods = np.stack([u, 5 * u], axis=1)  # (N, J, C, K): period 1 must be ignored
    from_4d = reconstruct_arrays(s, periods, frequencies_hz=FREQS, size=SIZE, params=LINEAR)
    np.testing.assert_array_equal(from_4d.linear_frames_mol_per_l, result.linear_frames_mol_per_l)


def test_it_displays_the_linear_image_of_a_linear_solver_without_positivity():
    s = _system()
    params = LINEAR.replace(solver="kaczmarz")
    result = reconstruct_arrays(s, _scan(s), frequencies_hz=FREQS, size=SIZE, params=params)
    np.testing.assert_allclose(result.linear_frames_mol_per_l[0], X_TRUE, atol=LINEAR_TOL)
    np.testing.assert_array_equal(result.concentration_mol_per_l, result.linear_frames_mol_per_l)
    assert not any("display" in n for n in result.notes)


def test_it_subtracts_an_empty_bore_scan_given_as_arrays(tmp_path):
    s = _system()
    bore = 0.3 * _system(seed=2)[..., 0]  # (C, K) scanner background
    params = LINEAR.replace(background=str(tmp_path / "empty.mdf"))
    u = _scan(s) + bore[None]
    with pytest.raises(
        ValueError, match=re.escape(f"background={params.background!r} is a file: pass external_background_spectra")
    ):
        reconstruct_arrays(s, u, frequencies_hz=FREQS, size=SIZE, params=params)
    result = reconstruct_arrays(
        s, u, frequencies_hz=FREQS, size=SIZE, params=params, external_background_spectra=np.tile(bore, (4, 1, 1))
    )
    np.testing.assert_allclose(result.linear_frames_mol_per_l[0], X_TRUE, atol=LINEAR_TOL)
    assert "measurement: subtracted mean of 4 empty-bore frames" in result.notes
    np.testing.assert_allclose(result.background_rows, bore[0, 4:], rtol=1e-12)  # unweighted rows


def test_it_computes_the_calibration_snr_from_its_background_frames():
    """Rows whose calibration background is as loud as the signal fall below the threshold."""
    s = _system()
    rng = np.random.default_rng(3)
    noise = np.full((C, K, 1), 1e-3)
    noise[0, [5, 9]] = 1e3
    bg = noise * (rng.standard_normal((C, K, 8)) + 1j * rng.standard_normal((C, K, 8)))
    params = LINEAR.replace(snr_threshold=10.0)
    result = reconstruct_arrays(
        s, _scan(s), frequencies_hz=FREQS, size=SIZE, params=params, system_matrix_background=bg
    )
    assert result.selection["frequency_index"] == [4, 6, 7, 8, 10, 11]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"system_matrix": np.ones((K, P))}, f"system_matrix must be (C, K, P), got shape ({K}, {P})"),
        ({"frequencies_hz": FREQS[:-1]}, f"frequencies_hz has shape ({K - 1},), expected ({K},)"),
        ({"size": (4, 1)}, "size needs 3 positive entries (x, y, z), got (4, 1)"),
        ({"size": (3, 1, 1)}, "size (3, 1, 1) holds 3 voxels, the system matrix has 4"),
        ({"delta_concentration_mol_per_l": 0.0}, "delta_concentration_mol_per_l must be > 0, got 0.0"),
        ({"delta_concentration_mol_per_l": float("nan")}, "delta_concentration_mol_per_l must be > 0, got nan"),
        (
            {"system_matrix_background": np.ones((C, K))},
            f"system_matrix_background has shape ({C}, {K}), expected ({C}, {K}, E)",
        ),
    ],
)
def test_it_refuses_malformed_arrays(change, message):
    s = _system()
    args = {"system_matrix": s, "measurement_spectra": _scan(s), "frequencies_hz": FREQS, "size": SIZE} | change
    with pytest.raises(ValueError, match=re.escape(message)):
        reconstruct_arrays(args.pop("system_matrix"), args.pop("measurement_spectra"), params=LINEAR, **args)


def test_it_refuses_spread_masks_or_background_rows_of_the_wrong_shape():
    rows = _system()[0, 4:]  # (8, P)
    with pytest.raises(ValueError, match=re.escape(f"masks have shape (2, {P + 1}), expected (R, {P})")):
        region_spread_arrays(rows, np.ones((2, P + 1)), LINEAR, 1e-9, SIZE)
    with pytest.raises(ValueError, match=re.escape("background rows have shape (7,), expected (8,)")):
        background_spread_arrays(rows, np.ones(7), LINEAR, 1e-9, SIZE)


def test_it_refuses_to_rebuild_a_spread_without_the_recorded_plan(tmp_path):
    calibration = tmp_path / "sm.mdf"
    masks = np.ones((1, P))
    with pytest.raises(ValueError, match=re.escape(f"{calibration}: no such calibration file")):
        region_spread(calibration, {}, masks)
    calibration.write_bytes(b"not read before the plan is checked")
    with pytest.raises(
        ValueError, match=re.escape("the reconstruction does not record its plan ('params'): cannot rebuild its spread")
    ):
        region_spread(calibration, {}, masks)
    plan = {
        "params": LINEAR.replace(weighting="whiten").as_dict(),
        "lambda_abs": 1e-9,
        "selection": {"channel": [0, 0], "frequency_index": [4, 5]},
        "row_weights": [1.0],
    }
    with pytest.raises(
        ValueError, match=re.escape("weighting='whiten': the reconstruction does not record its row weights")
    ):
        region_spread(calibration, plan, masks)


def test_it_rebuilds_a_row_norm_weighted_spread_and_refuses_a_transfer_function_the_calibration_lacks(tmp_path):
    """The spread is rebuilt with the stored plan: selected rows, calibration background
    subtracted, each row scaled to unit norm, the stored lambda_abs."""
    from recon.mdf import MDFFile
    from recon.pipeline import load_arrays, reconstruct_file
    from recon.quantify import read_reconstruction
    from recon.simulate import simulate_to_files

    sim = simulate_to_files(tmp_path / "sim", dims=2, frames=4, seed=3, fast=True, grid=(6, 6, 1))
    params = ReconParams(weighting="row_norm", dtype="float64", iterations=4)
    reconstruct_file(sim["system_matrix"], sim["measurement"], tmp_path / "r.mdf", params)
    with MDFFile(tmp_path / "r.mdf") as f:
        stored = read_reconstruction(f)
    masks = np.zeros((1, 36))
    masks[0, 14:16] = 1.0
    spread = region_spread(sim["system_matrix"], stored.parameters, masks)

    arrays = load_arrays(sim["system_matrix"], sim["measurement"])
    sel = stored.parameters["selection"]
    ch, fr = np.asarray(sel["channel"]), np.asarray(sel["frequency_index"])
    s = arrays["system_matrix"][ch, fr] - arrays["system_matrix_background"][ch, fr].mean(axis=-1)[:, None]
    s /= np.linalg.norm(s, axis=1)[:, None]
    direct = region_spread_arrays(s, masks, params, stored.parameters["lambda_abs"], (6, 6, 1))
    np.testing.assert_allclose(spread, direct, rtol=1e-6, atol=1e-9 * np.abs(direct).max())

    divided = stored.parameters | {"calibration_transfer_function_divided": True}
    message = f"{sim['system_matrix']}: the image was made dividing by a transfer function it lacks"
    with pytest.raises(ValueError, match=re.escape(message)):
        region_spread(sim["system_matrix"], divided, masks)
