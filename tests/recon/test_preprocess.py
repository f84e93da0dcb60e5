"""Preprocessing: row selection, background correction, averaging, weighting."""

import numpy as np
import pytest

from recon import preprocess as pp
from recon.params import ReconParams

FREQS = np.arange(11) * 20e3  # 0 … 200 kHz
EXACT = 1e-12


def _snr():
    snr = np.tile(np.arange(11, dtype=float), (2, 1))
    snr[1] *= 2
    return snr


def test_it_selects_rows_by_snr_band_and_channel():
    sel = pp.select_rows(_snr(), FREQS, ReconParams(snr_threshold=8, min_freq_hz=80e3, max_freq_hz=180e3), 2)
    assert list(zip(sel.channel.tolist(), sel.frequency.tolist(), strict=True)) == [
        (0, 8),
        (0, 9),
        (1, 4),
        (1, 5),
        (1, 6),
        (1, 7),
        (1, 8),
        (1, 9),
    ]
    only_ch0 = pp.select_rows(_snr(), FREQS, ReconParams(snr_threshold=0, channels=(0,)), 2)
    assert set(only_ch0.channel.tolist()) == {0}


def test_it_keeps_the_highest_snr_rows_with_max_rows():
    sel = pp.select_rows(_snr(), FREQS, ReconParams(snr_threshold=0, max_rows=3), 2)
    assert sel.snr.tolist() == [16.0, 18.0, 20.0]
    assert sel.candidates == 14


def test_it_names_the_sizes_when_the_selection_is_empty():
    with pytest.raises(ValueError, match=r"empty frequency selection: 0 of 2x11 rows pass snr_threshold=100"):
        pp.select_rows(_snr(), FREQS, ReconParams(snr_threshold=100), 2)


def test_it_rejects_out_of_range_channels():
    with pytest.raises(ValueError, match=r"channels \(3,\) out of range for 2 receive channels"):
        pp.select_rows(_snr(), FREQS, ReconParams(channels=(3,)), 2)


def _drifting_scan():
    """Background that drifts linearly over 12 frames; signal 1+0j in frames 3..8."""
    n, m = 12, 3
    is_bg = np.array([True] * 3 + [False] * 6 + [True] * 3)
    drift = (1.0 + 0.5 * np.arange(n) / (n - 1))[:, None] * np.array([2.0, 1j, -1.0])[None, :]
    signal = np.where(is_bg[:, None], 0.0, 1.0 + 0.0j) * np.ones((n, m))
    return drift + signal, is_bg


def test_it_removes_a_linear_drift_exactly_by_interpolation():
    rows, is_bg = _drifting_scan()
    idx = pp.foreground_frames(is_bg, None)
    corrected = rows[idx] - pp.background_estimate(rows, is_bg, idx, "interpolate")
    np.testing.assert_allclose(corrected, 1.0, atol=EXACT)
    mean_corr = rows[idx] - pp.background_estimate(rows, is_bg, idx, "mean")
    assert np.abs(mean_corr - 1.0).max() > 0.1  # the plain mean leaves the drift


def test_it_averages_frames_in_blocks_and_respects_the_frame_range():
    rows, is_bg = _drifting_scan()
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    s = np.ones((3, 5), complex)
    prep = pp.prepare_rows(s, None, rows, is_bg, sel, ReconParams(frames=(2, 9), average=4))
    assert [g.tolist() for g in prep.frame_groups] == [[3, 4, 5, 6], [7, 8]]
    np.testing.assert_allclose(prep.measurements, 1.0, atol=EXACT)


def test_it_requires_background_frames_for_background_correction():
    rows, _ = _drifting_scan()
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    with pytest.raises(
        ValueError, match="the scan has none flagged isBackgroundFrame and the calibration has no background frames"
    ):
        pp.prepare_rows(np.ones((3, 5)), None, rows, np.zeros(12, bool), sel, ReconParams(background="mean"))


def test_it_whitens_rows_by_the_background_noise():
    rng = np.random.default_rng(0)
    noise_sd = np.array([1.0, 10.0, 100.0])
    rows = rng.standard_normal((400, 3)) * noise_sd
    is_bg = np.zeros(400, bool)
    is_bg[:200] = True
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    prep = pp.prepare_rows(np.ones((3, 4)), None, rows, is_bg, sel, ReconParams(weighting="whiten", background="mean"))
    np.testing.assert_allclose(prep.row_weights * noise_sd, 1.0, rtol=0.15)


def test_it_rejects_nan_in_the_measurement():
    rows, is_bg = _drifting_scan()
    rows[4, 1] = np.nan
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    with pytest.raises(ValueError, match=r"measurement contains 1 non-finite values \(NaN or inf\) out of 36"):
        pp.prepare_rows(np.ones((3, 5)), None, rows, is_bg, sel, ReconParams())


def test_it_rejects_rows_of_the_wrong_shape():
    rows, is_bg = _drifting_scan()
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    with pytest.raises(ValueError, match=r"system_matrix_rows has shape \(4, 5\), expected \(3, P\)"):
        pp.prepare_rows(np.ones((4, 5)), None, rows, is_bg, sel, ReconParams())


def test_it_divides_each_side_by_its_own_transfer_function():
    """A receive chain that scales and rotates each frequency differently in the
    calibration and in the scan cancels once each side is divided by its own."""
    rng = np.random.default_rng(3)
    s = rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))
    x = rng.random(5)
    is_bg = np.zeros(4, bool)
    tf_sm = np.array([2.0, 0.5j, 1 + 1j])
    tf_scan = np.array([0.8, 3.0, -1j])
    measured = np.tile((s @ x) * tf_scan, (4, 1))
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    prep = pp.prepare_rows(
        s * tf_sm[:, None],
        None,
        measured,
        is_bg,
        sel,
        ReconParams(background="none"),
        sm_transfer_function_rows=tf_sm,
        measurement_transfer_function_rows=tf_scan,
    )
    np.testing.assert_allclose(prep.system_matrix, s, rtol=1e-12)
    np.testing.assert_allclose(prep.measurements[0], s @ x, rtol=1e-12)
    assert "transfer function: divided calibration and measurement, each by its own" in prep.notes


def test_it_refuses_a_transfer_function_on_one_side_only():
    """A raw calibration with its transfer function and a raw scan without one cannot be compared."""
    s = np.ones((3, 4), complex)
    sel = pp.RowSelection(np.zeros(3, int), np.arange(3), np.zeros(3), np.ones(3), 3)
    with pytest.raises(ValueError, match="the two cannot be brought to the same state"):
        pp.prepare_rows(
            s,
            None,
            np.ones((2, 3), complex),
            np.zeros(2, bool),
            sel,
            ReconParams(background="none"),
            sm_transfer_function_rows=np.full(3, 2.0 + 0j),
        )
