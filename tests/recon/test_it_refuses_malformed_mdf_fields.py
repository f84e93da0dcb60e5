"""MDFFile refuses MDF files whose fields contradict each other or the specification,
with one MDFError line naming the dataset and the values; and reads the older field shapes."""

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from recon.mdf import MDFError, MDFFile, write_mdf, write_reconstruction
from tests.recon.test_mdf_compressed import compress, smooth_matrix
from tests.recon.test_mdf_factories import layout_fields, random_spectra, write_fast_calibration, write_time_measurement


def _edit(path: Path, **replace: Any) -> Path:
    """Replace datasets (keys with '__' for '/') in an existing file; None deletes."""
    with h5py.File(path, "r+") as h5:
        for key, value in replace.items():
            name = "/" + key.replace("__", "/")
            if name in h5:
                del h5[name]
            if value is not None:
                h5[name] = value
    return path


def _time(tmp_path: Path, **layout: Any) -> Path:
    path = tmp_path / "t.mdf"
    write_time_measurement(path, N=4, J=1, C=2, V=16, **layout)
    return path


def _freq(tmp_path: Path, **layout: Any) -> tuple[Path, np.ndarray]:
    spec = random_spectra(np.random.default_rng(3), 4, 1, 2, 9)
    path = tmp_path / "f.mdf"
    write_mdf(path, layout_fields(spec, V=16, fourier=True, fast=False, **layout))
    return path, spec


def _refusal(path: Path) -> str:
    with pytest.raises(MDFError) as exc:
        MDFFile(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path))
    return message[len(str(path)) + 2 :]


def test_it_refuses_a_file_without_version(tmp_path):
    assert _refusal(_edit(_time(tmp_path), version=None)) == "missing /version: not an MDF file"


def test_it_refuses_a_file_without_any_data(tmp_path):
    path = _edit(_time(tmp_path), measurement__data=None)
    assert _refusal(path) == "neither /measurement/data nor /reconstruction/data: no data to read"


def test_it_refuses_missing_frame_count(tmp_path):
    path = _edit(_time(tmp_path), acquisition__numFrames=None)
    assert _refusal(path) == "missing /acquisition/numFrames or /measurement/numFrames"


def test_it_refuses_a_frame_count_that_is_text(tmp_path):
    path = _edit(_time(tmp_path), acquisition__numFrames=np.bytes_("four"))
    assert _refusal(path).startswith("/acquisition/numFrames should be a number, found <U4 'four'")


def test_it_reports_a_header_value_it_cannot_convert(tmp_path):
    path = _edit(_time(tmp_path), acquisition__drivefield__strength=np.bytes_("strong"))
    assert _refusal(path).startswith("unreadable MDF header: ValueError")


def test_it_refuses_measurement_data_that_is_a_group(tmp_path):
    path = _edit(_time(tmp_path), measurement__data=None)
    with h5py.File(path, "r+") as h5:
        h5.create_group("/measurement/data")
    assert _refusal(path) == "/measurement/data is a group, not a dataset"


def test_it_refuses_three_dimensional_measurement_data(tmp_path):
    path = _edit(_time(tmp_path), measurement__data=np.zeros((4, 2, 16), "f4"))
    assert _refusal(path) == "/measurement/data has 3 dimensions (4, 2, 16), expected 4"


def test_it_refuses_data_whose_channels_disagree_with_the_header(tmp_path):
    path = _edit(_time(tmp_path), acquisition__receiver__numChannels=np.int64(3))
    assert _refusal(path) == (
        "/measurement/data has 1 periods and 2 channels in shape (4, 1, 2, 16), "
        "but the header says numPeriods=1, numChannels=3"
    )


def test_it_refuses_time_data_whose_samples_disagree_with_the_header(tmp_path):
    path = _edit(_time(tmp_path), acquisition__receiver__numSamplingPoints=np.int64(20))
    assert _refusal(path) == (
        "/measurement/data stores 16 samples per period in shape (4, 1, 2, 16), but numSamplingPoints is 20"
    )


def test_it_refuses_a_background_mask_of_the_wrong_length(tmp_path):
    path = _edit(_time(tmp_path), measurement__isBackgroundFrame=np.zeros(3, np.int8))
    assert _refusal(path) == "/measurement/isBackgroundFrame has 3 entries for 4 frames"


def test_it_refuses_a_frame_permutation_listing_a_frame_twice(tmp_path):
    path = _time(tmp_path, permutation=np.array([0, 1, 2, 3]))
    _edit(path, measurement__framePermutation=np.array([1, 2, 2, 4]))
    assert _refusal(path) == "/measurement/framePermutation is not a permutation of 4 frames"


def test_it_refuses_a_frame_permutation_out_of_range(tmp_path):
    path = _time(tmp_path, permutation=np.array([0, 1, 2, 3]))
    _edit(path, measurement__framePermutation=np.array([1, 2, 3, 9]))
    with pytest.raises(MDFError) as exc:  # names the dataset (not the path)
        MDFFile(path)
    assert str(exc.value) == (
        "/measurement/framePermutation holds values from 1 to 9, outside 0..3 (0-based) and 1..4 (1-based)"
    )


def test_it_refuses_a_frequency_selection_that_is_not_integers(tmp_path):
    path, _ = _freq(tmp_path, frequency_selection=np.arange(9))
    _edit(path, measurement__frequencySelection=np.arange(9, dtype=float))
    assert _refusal(path) == "/measurement/frequencySelection has dtype float64, expected integers"


def test_it_refuses_a_frequency_selection_listing_a_frequency_twice(tmp_path):
    path, _ = _freq(tmp_path, frequency_selection=np.arange(9))
    _edit(path, measurement__frequencySelection=np.array([1, 2, 3, 4, 5, 6, 7, 8, 8]))
    assert _refusal(path) == "/measurement/frequencySelection lists a frequency more than once (9 entries, 8 distinct)"


def test_it_refuses_a_transfer_function_of_the_wrong_shape(tmp_path):
    path, _ = _freq(tmp_path, frequency_selection=np.arange(1, 8))
    _edit(path, acquisition__receiver__transferFunction=np.ones((2, 5), np.complex128))
    assert _refusal(path) == (
        "/acquisition/receiver/transferFunction has shape (2, 5), expected (2, 9) (C x K) "
        "or (2, 7) for the selected frequencies"
    )


def test_it_reads_a_legacy_real_imaginary_transfer_function(tmp_path):
    path, _ = _freq(tmp_path)
    tf = np.stack([np.full((2, 9), 2.0), np.full((2, 9), -1.0)], axis=-1)  # C x K x 2
    _edit(path, acquisition__receiver__transferFunction=tf)
    with MDFFile(path) as f:
        np.testing.assert_array_equal(f.transfer_function, np.full((2, 9), 2.0 - 1.0j))


@pytest.mark.parametrize(
    "stored, expected_shape", [(np.full((2, 1), 0.012), (1, 2, 1)), (np.full(2, 0.012), (1, 2, 1))]
)
def test_it_reads_drive_strengths_stored_without_the_period_axis(tmp_path, stored, expected_shape):
    path = _edit(_time(tmp_path), acquisition__drivefield__strength=stored)
    with MDFFile(path) as f:
        assert f.drive_strength_t.shape == expected_shape
        np.testing.assert_array_equal(f.drive_strength_t, np.full(expected_shape, 0.012))


def test_it_refuses_an_unknown_sparsity_transformation(tmp_path):
    fields, _ = compress(smooth_matrix(), 10, 2, one_based=True)
    fields["/measurement/sparsityTransformation"] = "WAVELET"
    write_mdf(tmp_path / "c.mdf", fields)
    assert _refusal(tmp_path / "c.mdf") == (
        "sparsityTransformation 'WAVELET' is not supported (supported: DCT-I, DCT-II, DCT-III, DCT-IV)"
    )


def test_it_refuses_compression_without_subsampling_indices(tmp_path):
    fields, _ = compress(smooth_matrix(), 10, 2, one_based=True)
    del fields["/measurement/subsamplingIndices"]
    write_mdf(tmp_path / "c.mdf", fields)
    assert _refusal(tmp_path / "c.mdf") == (
        "isSparsityTransformed is set but /measurement/subsamplingIndices is missing"
    )


def _compressed_rows_refusal(path: Path) -> str:
    with MDFFile(path) as f, pytest.raises(MDFError) as exc:
        f.system_matrix()
    return str(exc.value)[len(str(path)) + 2 :]


def test_it_refuses_a_compressed_matrix_without_grid_size(tmp_path):
    fields, _ = compress(smooth_matrix(), 10, 2, one_based=True)
    del fields["/calibration/size"]
    write_mdf(tmp_path / "c.mdf", fields)
    assert _compressed_rows_refusal(tmp_path / "c.mdf") == "compressed system matrix without /calibration/size"


def test_it_refuses_subsampling_indices_of_the_wrong_shape(tmp_path):
    fields, _ = compress(smooth_matrix(), 10, 2, one_based=True)
    fields["/measurement/subsamplingIndices"] = fields["/measurement/subsamplingIndices"][..., :9]
    write_mdf(tmp_path / "c.mdf", fields)
    assert _compressed_rows_refusal(tmp_path / "c.mdf") == (
        "/measurement/subsamplingIndices has shape (1, 2, 7, 9), expected (1, 2, 7, 10)"
    )


def test_it_refuses_subsampling_indices_outside_the_grid(tmp_path):
    fields, _ = compress(smooth_matrix(), 10, 2, one_based=True)
    sub = fields["/measurement/subsamplingIndices"].copy()
    sub[0, 1, 3, 4] = 16 * 12 + 5  # 1-based: 197 > 192 positions
    fields["/measurement/subsamplingIndices"] = sub
    write_mdf(tmp_path / "c.mdf", fields)
    assert _compressed_rows_refusal(tmp_path / "c.mdf") == (
        "subsamplingIndices run from 1 to 197, outside the 192 grid positions"
    )


def test_it_decompresses_a_single_voxel_grid_without_a_transform(tmp_path):
    rows = smooth_matrix(size=(1, 1, 1))
    fields, background = compress(rows, 1, 2, one_based=False, size=(1, 1, 1))
    write_mdf(tmp_path / "c.mdf", fields)
    with MDFFile(tmp_path / "c.mdf") as f:
        S, B = f.system_matrix()
    np.testing.assert_allclose(S, rows, rtol=1e-12)
    np.testing.assert_allclose(B, background, rtol=1e-12)


def test_it_refuses_selections_it_cannot_index(tmp_path):
    path = _time(tmp_path)
    with MDFFile(path) as f:
        with pytest.raises(MDFError, match=r"^frame mask has shape \(3,\), expected \(4,\)$"):
            f.spectra(frames=np.array([True, False, True]))
        with pytest.raises(MDFError, match=r"^channel indices must be integers, got dtype float64$"):
            f.spectra(channels=[0.0, 1.0])
        assert f.spectra(frames=[]).shape == (0, 1, 2, 9)


def test_it_returns_empty_rows_for_an_empty_frequency_selection(tmp_path):
    write_fast_calibration(tmp_path / "cal.mdf", size=(2, 2, 1), n_background=1, C=2, V=16)
    with MDFFile(tmp_path / "cal.mdf") as f:
        S, B = f.system_matrix(frequencies=[])
    assert (S.shape, B.shape) == ((2, 0, 4), (2, 0, 1))


def test_it_scales_stored_spectra_without_offset_away_from_the_dc_bin(tmp_path):
    conversion = np.array([[2.0, 5.0], [3.0, -1.0]])
    path, spec = _freq(tmp_path, conversion=conversion)
    with MDFFile(path) as f:
        away = f.spectra(frequencies=[1, 4])
        dc = f.spectra(frequencies=[0])
    np.testing.assert_allclose(away, spec[..., [1, 4]] * conversion[:, 0][None, None, :, None], rtol=1e-6)
    expected_dc = spec[..., [0]] * conversion[:, 0][None, None, :, None] + (conversion[:, 1] * 16)[None, None, :, None]
    np.testing.assert_allclose(dc, expected_dc, rtol=1e-6)


def test_it_refuses_measurement_requests_on_a_reconstruction(tmp_path):
    path = tmp_path / "r.mdf"
    write_reconstruction(
        path, np.ones(8), size=(2, 2, 2), field_of_view_m=[0.02] * 3, field_of_view_center_m=[0] * 3, parameters={}
    )
    with MDFFile(path) as f:
        with pytest.raises(MDFError, match=r"spectra\(\) needs measurement data; this file is a reconstruction$"):
            f.spectra()
        with pytest.raises(
            MDFError, match=r"system_matrix\(\) needs a calibration file; this file is a reconstruction$"
        ):
            f.system_matrix()


def test_it_refuses_a_reconstruction_request_on_a_measurement(tmp_path):
    with (
        MDFFile(_time(tmp_path)) as f,
        pytest.raises(MDFError, match=r"no /reconstruction/data: this file is a measurement$"),
    ):
        f.reconstruction()


def test_it_closes_once_and_describes_itself(tmp_path):
    path = _time(tmp_path)
    f = MDFFile(path)
    assert repr(f) == f"<MDFFile {str(path)!r} v2.1.0 measurement: N=4 J=1 C=2 V=16>"
    f.close()
    f.close()  # idempotent
    assert not f._h5.id.valid


def test_it_names_a_group_or_missing_field(tmp_path):
    with MDFFile(_time(tmp_path)) as f:
        with pytest.raises(MDFError, match=r"/acquisition is a group, not a dataset$"):
            f.field("/acquisition")
        with pytest.raises(MDFError, match=r"/calibration/size is missing$"):
            f.field("/calibration/size")


def test_it_refuses_an_empty_frame_permutation(tmp_path):
    path = _time(tmp_path, permutation=np.array([0, 1, 2, 3]))
    _edit(path, measurement__framePermutation=np.zeros(0, np.int64))
    assert _refusal(path) == "/measurement/framePermutation is not a permutation of 4 frames"


def test_it_refuses_a_frequency_selection_that_disagrees_with_the_data(tmp_path):
    path, _ = _freq(tmp_path, frequency_selection=np.arange(9))
    _edit(path, measurement__frequencySelection=np.arange(1, 8))
    assert _refusal(path) == "/measurement/data stores 9 frequencies in shape (4, 1, 2, 9), expected 7"


def test_it_selects_frames_by_mask(tmp_path):
    path = tmp_path / "t.mdf"
    t = write_time_measurement(path, N=4, J=1, C=2, V=16)
    with MDFFile(path) as f:
        u = f.spectra(frames=np.array([True, False, False, True]))
    np.testing.assert_allclose(u, np.fft.rfft(t[[0, 3]].astype(np.float64), axis=-1), rtol=1e-12)
