"""Row selection and row preparation on the less common paths: no calibration SNR,
frequencies only one file stores, a scan without background frames (calibration or
empty-bore background, whitening from the calibration), per-row norm weighting, and
the refusals that go with them (each names what is wrong)."""

import re

import numpy as np
import pytest

from recon import preprocess as pp
from recon.params import ReconParams

FREQS = np.arange(6) * 40e3  # 0 … 200 kHz
EXACT = 1e-12
M = 3


def _sel():
    return pp.RowSelection(np.zeros(M, int), np.arange(M), np.zeros(M), np.ones(M), M)


def test_it_selects_every_row_in_band_without_an_snr_and_only_stored_frequencies():
    available = np.array([True, True, True, False, True, True])
    sel = pp.select_rows(None, FREQS, ReconParams(min_freq_hz=80e3, snr_threshold=1e9), 2, available=available)
    # the SNR threshold cannot apply without an SNR; 120 kHz (index 3) is not stored
    assert list(zip(sel.channel.tolist(), sel.frequency.tolist(), strict=True)) == [
        (0, 2),
        (0, 4),
        (0, 5),
        (1, 2),
        (1, 4),
        (1, 5),
    ]
    assert np.all(np.isinf(sel.snr)) and sel.candidates == 6
    np.testing.assert_array_equal(sel.flat_index(6), [2, 4, 5, 8, 10, 11])
    assert sel.as_dict() == {
        "num_rows": 6,
        "candidates": 6,
        "channel": [0, 0, 0, 1, 1, 1],
        "frequency_index": [2, 4, 5, 2, 4, 5],
    }


def test_it_refuses_to_rank_rows_without_an_snr():
    with pytest.raises(
        ValueError, match=re.escape("max_rows needs the calibration SNR to rank rows, and the file has none")
    ):
        pp.select_rows(None, FREQS, ReconParams(min_freq_hz=0, max_rows=2), 1)


def test_it_refuses_an_snr_or_a_stored_frequency_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match=re.escape("snr has shape (1, 6), expected (C, K) = (2, 6)")):
        pp.select_rows(np.ones((1, 6)), FREQS, ReconParams(), 2)
    with pytest.raises(ValueError, match=re.escape("snr contains 1 non-finite values (NaN or inf) out of 6")):
        pp.select_rows(np.array([[1, 2, np.nan, 4, 5, 6]]), FREQS, ReconParams(), 1)
    with pytest.raises(ValueError, match=re.escape("available has shape (5,), expected (6,)")):
        pp.select_rows(None, FREQS, ReconParams(), 1, available=np.ones(5, bool))


def test_it_refuses_frame_ranges_without_foreground_frames():
    is_bg = np.array([True, True, False, False, True])
    np.testing.assert_array_equal(pp.foreground_frames(is_bg, (1, 99)), [2, 3])
    with pytest.raises(ValueError, match=re.escape("frames (5, 9) start beyond the 5 frames of the scan")):
        pp.foreground_frames(is_bg, (5, 9))
    with pytest.raises(ValueError, match=re.escape("no foreground frames in range [4, 5) of 5 frames")):
        pp.foreground_frames(is_bg, (4, 9))


def test_it_interpolates_background_to_the_nearest_block_at_the_ends():
    """Frames before the first background block take its mean, frames after the last
    take the last one's, and a frame at a block's centre takes that block's mean."""
    rows = np.arange(8, dtype=complex)[:, None] * np.array([1.0, 1j, -2.0])[None, :]
    is_bg = np.array([False, True, True, True, False, False, True, False])
    est = pp.background_estimate(rows, is_bg, np.array([0, 2, 4, 7]), "interpolate")
    block1, block2 = rows[1:4].mean(axis=0), rows[6]
    np.testing.assert_allclose(est[0], block1, atol=EXACT)  # before the first block
    np.testing.assert_allclose(est[1], block1, atol=EXACT)  # at the first block's centre (frame 2)
    np.testing.assert_allclose(est[2], block1 + 0.5 * (block2 - block1), atol=EXACT)  # half way from 2 to 6
    np.testing.assert_allclose(est[3], block2, atol=EXACT)  # after the last block


def test_it_refuses_a_background_estimate_without_background_frames_or_with_an_unknown_mode():
    rows = np.ones((4, M), complex)
    message = "background='interpolate' needs background frames, but none of the 4 frames is flagged isBackgroundFrame"
    with pytest.raises(ValueError, match=re.escape(message)):
        pp.background_estimate(rows, np.zeros(4, bool), np.arange(4), "interpolate")
    with pytest.raises(ValueError, match=re.escape("unknown background mode 'median'")):
        pp.background_estimate(rows, np.array([True, False, False, True]), np.arange(1, 3), "median")


def test_it_subtracts_the_calibration_background_and_whitens_by_its_noise_when_the_scan_has_none():
    rng = np.random.default_rng(5)
    noise_sd = np.array([1.0, 10.0, 100.0])
    sm_bg = rng.standard_normal((M, 400)) * noise_sd[:, None] + 7.0
    scan = np.full((4, M), 9.0 + 0j)
    prep = pp.prepare_rows(
        np.ones((M, 4)), sm_bg, scan, np.zeros(4, bool), _sel(), ReconParams(background="mean", weighting="whiten")
    )
    np.testing.assert_allclose(prep.row_weights * noise_sd, 1.0, rtol=0.15)
    expected = (9.0 - sm_bg.mean(axis=1)) * prep.row_weights
    np.testing.assert_allclose(prep.measurements, np.tile(expected, (4, 1)), rtol=EXACT)
    assert "whitening by noise of the calibration background frames" in prep.notes
    assert any(
        n.startswith("measurement: the scan has no background frames; subtracted the mean of the calibration's 400")
        for n in prep.notes
    )
    # and the system matrix had the calibration background mean subtracted, then weighted
    np.testing.assert_allclose(
        prep.system_matrix,
        (1.0 - sm_bg.mean(axis=1))[:, None] * prep.row_weights[:, None] * np.ones((1, 4)),
        rtol=EXACT,
    )


def test_it_refuses_whitening_without_two_background_frames():
    with pytest.raises(
        ValueError, match=re.escape("weighting='whiten' needs >= 2 background frames in the scan or the calibration")
    ):
        pp.prepare_rows(
            np.ones((M, 4)),
            None,
            np.ones((4, M)),
            np.zeros(4, bool),
            _sel(),
            ReconParams(background="none", weighting="whiten"),
        )


def test_it_weights_each_row_by_its_inverse_norm():
    s = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], dtype=complex)
    prep = pp.prepare_rows(
        s, None, np.ones((2, M)), np.zeros(2, bool), _sel(), ReconParams(background="none", weighting="row_norm")
    )
    np.testing.assert_allclose(prep.row_weights, [0.2, 0.5, 1.0], rtol=EXACT)
    np.testing.assert_allclose(np.linalg.norm(prep.system_matrix, axis=1), 1.0, rtol=EXACT)
    np.testing.assert_allclose(prep.measurements, [[0.2, 0.5, 1.0]] * 2, rtol=EXACT)


@pytest.mark.parametrize(
    "measurement, is_bg, message",
    [
        (np.ones((4, M + 1)), np.zeros(4, bool), f"measurement_rows has shape (4, {M + 1}), expected (N, {M})"),
        (np.ones(M), np.zeros(1, bool), f"measurement_rows has shape ({M},), expected (N, {M})"),
        (np.ones((4, M)), np.zeros(3, bool), "is_background has shape (3,), expected (4,)"),
    ],
)
def test_it_refuses_measurement_rows_or_flags_of_the_wrong_shape(measurement, is_bg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pp.prepare_rows(np.ones((M, 4)), None, measurement, is_bg, _sel(), ReconParams(background="none"))


def test_it_refuses_an_empty_or_misshapen_empty_bore_scan(tmp_path):
    params = ReconParams(background=str(tmp_path / "empty.mdf"))
    args = (np.ones((M, 4)), None, np.ones((4, M)), np.zeros(4, bool), _sel(), params)
    with pytest.raises(ValueError, match=re.escape(f"background file {params.background!r} gave no frames")):
        pp.prepare_rows(*args, external_background_rows=np.ones((0, M)))
    with pytest.raises(ValueError, match=re.escape(f"background file {params.background!r} gave no frames")):
        pp.prepare_rows(*args)
    with pytest.raises(
        ValueError, match=re.escape(f"external background rows have shape (2, {M + 1}), expected (N_e, {M})")
    ):
        pp.prepare_rows(*args, external_background_rows=np.ones((2, M + 1)))


@pytest.mark.parametrize(
    "tf, message",
    [
        (np.ones(M - 1), f"calibration transfer function rows have shape ({M - 1},), expected ({M},)"),
        (np.array([1.0, 0.0, 1.0]), "calibration transfer function is zero or not finite at selected frequencies"),
        (np.array([1.0, np.nan, 1.0]), "calibration transfer function is zero or not finite at selected frequencies"),
    ],
)
def test_it_refuses_a_transfer_function_it_cannot_divide_by(tf, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pp.prepare_rows(
            np.ones((M, 4)),
            None,
            np.ones((2, M)),
            np.zeros(2, bool),
            _sel(),
            ReconParams(background="none"),
            sm_transfer_function_rows=tf,
            measurement_transfer_function_corrected=True,
        )
