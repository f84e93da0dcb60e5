"""validate() names each header, layout and calibration problem with its stable
code, the dataset concerned and the sizes or values involved (one problem per
defect, no exception)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.mdf import write_reconstruction
from recon.validate import Problem, validate, validate_pair
from tests.recon.test_mdf_factories import write_fast_calibration, write_time_measurement


def replace(path: Path, name: str, value) -> None:
    with h5py.File(path, "r+") as h5:
        if name in h5:
            del h5[name]
        if value is not None:
            h5[name] = value


def measurement(tmp_path: Path, **changes) -> Path:
    """The default time measurement (N=6, J=2, C=3, V=16) with some datasets replaced (None: deleted)."""
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    for name, value in changes.items():
        replace(path, name, value)
    return path


def calibration(tmp_path: Path, **changes) -> Path:
    """The default calibration (grid 4x3x2 + 2 background frames, J=1, C=2, K=16, fast axis) with changes."""
    path = tmp_path / "c.mdf"
    write_fast_calibration(path)
    for name, value in changes.items():
        replace(path, name, value)
    return path


def problems(path: Path) -> list[tuple[str, str, str]]:
    report = validate(path)
    assert report.valid is (not report.problems)
    return [(p.code, p.path, p.message) for p in report.problems]


BW = "/acquisition/receiver/bandwidth"


@pytest.mark.parametrize(
    "value, code, message",
    [
        (np.bytes_("wide"), "wrong_dtype", f"{BW} has dtype |S4, expected a number"),
        (np.array([], dtype=float), "invalid_value", f"{BW} is empty"),
        (np.nan, "non_finite", f"{BW} is nan"),
        (-1.0, "invalid_value", f"{BW} is -1.0, expected a positive value"),
        (0.0, "invalid_value", f"{BW} is 0.0, expected a positive value"),
    ],
)
def test_it_reports_a_bad_header_number(tmp_path, value, code, message):
    assert problems(measurement(tmp_path, **{BW: value})) == [(code, BW, message)]


def test_it_reports_a_fractional_frame_count(tmp_path):
    path = measurement(tmp_path, **{"/acquisition/numFrames": 6.5})
    assert problems(path) == [
        ("wrong_dtype", "/acquisition/numFrames", "/acquisition/numFrames is 6.5, expected a whole number")
    ]


def test_it_accepts_a_whole_frame_count_stored_as_float(tmp_path):
    assert problems(measurement(tmp_path, **{"/acquisition/numFrames": 6.0})) == []


def test_it_reports_a_version_that_is_not_a_string(tmp_path):
    report = validate(measurement(tmp_path, **{"/version": 2}))
    assert report.version is None
    assert report.problems == [
        Problem("wrong_dtype", "/version", "/version has dtype int64, expected a string like '2.1.0'")
    ]


DIV = "/acquisition/drivefield/divider"
STRENGTH = "/acquisition/drivefield/strength"


def test_it_reports_a_missing_divider(tmp_path):
    assert problems(measurement(tmp_path, **{DIV: None})) == [
        ("missing_field", DIV, f"required field {DIV} is missing")
    ]


def test_it_reports_a_divider_of_strings(tmp_path):
    assert problems(measurement(tmp_path, **{DIV: np.array([[b"a"], [b"b"]])})) == [
        ("wrong_dtype", DIV, f"{DIV} has dtype |S1, expected integers")
    ]


def test_it_reports_a_divider_for_the_wrong_number_of_drive_channels(tmp_path):
    assert problems(measurement(tmp_path, **{DIV: np.array([[102], [96], [99]])})) == [
        ("inconsistent_dimensions", DIV, f"{DIV} has shape (3, 1), expected (2, F) for 2 drive channels"),
        # the strength is then checked against the divider as stored
        (
            "inconsistent_dimensions",
            STRENGTH,
            f"{STRENGTH} has shape (2, 2, 1), expected (2, 3, 1) (J x D x F)",
        ),
    ]


def test_it_reports_a_drive_strength_of_the_wrong_shape(tmp_path):
    assert problems(measurement(tmp_path, **{STRENGTH: np.full((3, 2, 1), 0.012)})) == [
        ("inconsistent_dimensions", STRENGTH, f"{STRENGTH} has shape (3, 2, 1), expected (2, 2, 1) (J x D x F)")
    ]


def test_it_reports_a_flag_that_is_not_an_integer(tmp_path):
    name = "/measurement/isFourierTransformed"
    assert problems(measurement(tmp_path, **{name: 0.0})) == [
        ("wrong_dtype", name, f"{name} has dtype float64, expected an Int8 flag")
    ]


def test_it_reports_data_of_the_wrong_rank(tmp_path):
    data = np.zeros((6, 2, 48), dtype=np.float32)
    assert problems(measurement(tmp_path, **{"/measurement/data": data})) == [
        (
            "inconsistent_dimensions",
            "/measurement/data",
            "/measurement/data has 3 dimensions (6, 2, 48), expected 4 (N x J x C x V)",
        )
    ]


def test_it_accepts_integer_raw_samples_and_skips_their_nan_scan(tmp_path):
    data = np.arange(6 * 2 * 3 * 16, dtype=np.int16).reshape(6, 2, 3, 16)
    assert problems(measurement(tmp_path, **{"/measurement/data": data})) == []


def test_it_reports_fourier_data_with_an_integer_dtype(tmp_path):
    data = np.zeros((1, 2, 16, 26), dtype=np.int32)
    path = calibration(tmp_path, **{"/measurement/data": data})
    assert problems(path) == [
        (
            "wrong_dtype",
            "/measurement/data",
            "/measurement/data is Fourier transformed but has integer dtype int32",
        )
    ]


def test_it_reports_fourier_data_with_the_wrong_number_of_frequencies(tmp_path):
    data = np.zeros((1, 2, 15, 26), dtype=np.complex64)
    assert problems(calibration(tmp_path, **{"/measurement/data": data})) == [
        (
            "inconsistent_dimensions",
            "/measurement/data",
            "/measurement/data stores 15 frequencies in shape (1, 2, 15, 26) but K = V/2+1 for V = 30 is 16",
        )
    ]


def test_it_accepts_legacy_real_imaginary_pairs(tmp_path):
    with h5py.File(calibration(tmp_path), "r+") as h5:
        spec = h5["/measurement/data"][()]
        del h5["/measurement/data"]
        h5["/measurement/data"] = np.stack([spec.real, spec.imag], axis=-1)
    assert problems(tmp_path / "c.mdf") == []


SEL = "/measurement/frequencySelection"


def test_it_reports_a_selection_flag_without_a_selection(tmp_path):
    path = calibration(tmp_path, **{"/measurement/isFrequencySelection": np.int8(1)})
    assert problems(path) == [("missing_field", SEL, f"required field {SEL} is missing")]


def test_it_reports_a_selection_of_floats(tmp_path):
    path = calibration(tmp_path, **{"/measurement/isFrequencySelection": np.int8(1), SEL: np.arange(16.0)})
    assert problems(path) == [("wrong_dtype", SEL, f"{SEL} has dtype float64, expected integers")]


def test_it_reports_a_selection_outside_the_spectrum(tmp_path):
    path = calibration(tmp_path, **{"/measurement/isFrequencySelection": np.int8(1), SEL: np.arange(2, 18)})
    assert problems(path) == [
        ("invalid_value", SEL, f"{SEL} holds values 2..17, outside the 16 frequencies (0-based or 1-based)")
    ]


def test_it_reports_data_that_does_not_match_the_selection_length(tmp_path):
    path = calibration(tmp_path, **{"/measurement/isFrequencySelection": np.int8(1), SEL: np.arange(1, 9)})
    assert problems(path) == [
        (
            "inconsistent_dimensions",
            "/measurement/data",
            "/measurement/data stores 16 frequencies in shape (1, 2, 16, 26) but the frequencySelection length is 8",
        )
    ]


BG = "/measurement/isBackgroundFrame"


def test_it_reports_a_background_mask_of_floats(tmp_path):
    assert problems(measurement(tmp_path, **{BG: np.zeros(6)})) == [
        ("wrong_dtype", BG, f"{BG} has dtype float64, expected numbers")
    ]


def test_it_reports_a_background_mask_of_the_wrong_length(tmp_path):
    assert problems(measurement(tmp_path, **{BG: np.zeros(5, dtype=bool)})) == [
        ("inconsistent_dimensions", BG, f"{BG} has 5 entries for 6 frames")
    ]


PERM = "/measurement/framePermutation"
PERM_FLAG = "/measurement/isFramePermutation"


def test_it_reports_a_permutation_flag_without_a_permutation(tmp_path):
    assert problems(measurement(tmp_path, **{PERM_FLAG: np.int8(1)})) == [
        ("missing_field", PERM, f"isFramePermutation is set but {PERM} is missing")
    ]


def test_it_reports_a_permutation_of_floats(tmp_path):
    assert problems(measurement(tmp_path, **{PERM_FLAG: np.int8(1), PERM: np.arange(6.0)})) == [
        ("wrong_dtype", PERM, f"{PERM} has dtype float64, expected numbers")
    ]


@pytest.mark.parametrize("perm", [[0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4]])
def test_it_reports_a_permutation_that_is_not_one(tmp_path, perm):
    path = measurement(tmp_path, **{PERM_FLAG: np.int8(1), PERM: np.array(perm)})
    assert problems(path) == [
        ("invalid_value", PERM, f"{PERM} ({len(perm)} values) is not a permutation of the 6 frames")
    ]


@pytest.mark.parametrize("base", [0, 1])
def test_it_accepts_a_permutation_in_either_base(tmp_path, base):
    path = measurement(tmp_path, **{PERM_FLAG: np.int8(1), PERM: np.array([5, 4, 3, 2, 1, 0]) + base})
    assert problems(path) == []


def test_it_reports_a_transfer_function_of_the_wrong_shape(tmp_path):
    name = "/acquisition/receiver/transferFunction"
    assert problems(calibration(tmp_path, **{name: np.ones((2, 15), dtype=np.complex64)})) == [
        (
            "inconsistent_dimensions",
            name,
            f"{name} has shape (2, 15), expected (2, 16) (C x K, all or the selected frequencies)",
        )
    ]


def test_it_accepts_a_transfer_function_as_real_imaginary_pairs(tmp_path):
    name = "/acquisition/receiver/transferFunction"
    assert problems(calibration(tmp_path, **{name: np.ones((2, 16, 2))})) == []


def test_it_reports_a_conversion_factor_of_the_wrong_shape(tmp_path):
    name = "/acquisition/receiver/dataConversionFactor"
    assert problems(measurement(tmp_path, **{name: np.ones(3)})) == [
        (
            "inconsistent_dimensions",
            name,
            f"{name} has shape (3,), expected (3, 2) (C x 2: scale and offset per receive channel)",
        )
    ]


def test_it_reports_a_calibration_without_a_grid_size(tmp_path):
    assert problems(calibration(tmp_path, **{"/calibration/size": None})) == [
        ("missing_field", "/calibration/size", "required field /calibration/size is missing")
    ]


@pytest.mark.parametrize("size", [[4, 3], [4, 0, 6]])
def test_it_reports_a_grid_size_that_is_not_three_positive_integers(tmp_path, size):
    assert problems(calibration(tmp_path, **{"/calibration/size": np.array(size)})) == [
        ("invalid_value", "/calibration/size", f"/calibration/size is {size}, expected 3 positive integers")
    ]


def test_it_reports_a_field_of_view_that_is_not_three_lengths(tmp_path):
    name = "/calibration/fieldOfView"
    assert problems(calibration(tmp_path, **{name: np.ones(2)})) == [
        ("inconsistent_dimensions", name, f"{name} has shape (2,), expected (3,) (x, y, z)")
    ]


def test_it_reports_a_scalar_nan_snr_by_shape_and_value(tmp_path):
    name = "/calibration/snr"
    assert problems(calibration(tmp_path, **{name: np.nan})) == [
        ("inconsistent_dimensions", name, f"{name} has shape (), expected (1, 2, 16) (J x C x K)"),
        ("non_finite", name, f"{name} holds 1 NaN and 0 Inf values (first at index ()) in shape ()"),
    ]


def sparse_calibration(tmp_path: Path, n_coefficients: int) -> Path:
    """The calibration relabelled as sparsity transformed, keeping n coefficients per row."""
    path = tmp_path / "c.mdf"
    write_fast_calibration(path)
    with h5py.File(path, "r+") as h5:
        spec = h5["/measurement/data"][()]
        del h5["/measurement/data"], h5["/measurement/isBackgroundFrame"], h5["/acquisition/numFrames"]
        n = n_coefficients + 2
        h5["/measurement/data"] = (
            np.ascontiguousarray(spec[..., :n]) if n <= spec.shape[-1] else np.zeros(spec.shape[:3] + (n,), spec.dtype)
        )
        bg = np.zeros(n, dtype=bool)
        bg[-2:] = True
        h5["/measurement/isBackgroundFrame"] = bg
        h5["/acquisition/numFrames"] = n
        h5["/measurement/isSparsityTransformed"][()] = 1
        h5["/measurement/subsamplingIndices"] = np.zeros((1, 2, 16, n_coefficients), dtype=np.int32)
    return path


def test_it_reports_more_compressed_coefficients_than_grid_positions(tmp_path):
    path = sparse_calibration(tmp_path, 25)
    assert [p[:2] for p in problems(path)] == [("inconsistent_dimensions", "/measurement/subsamplingIndices")]
    assert problems(path)[0][2] == "25 compressed coefficients exceed the 24 grid positions"


def test_it_reports_subsampling_indices_of_the_wrong_shape(tmp_path):
    path = sparse_calibration(tmp_path, 10)
    with h5py.File(path, "r+") as h5:
        del h5["/measurement/subsamplingIndices"]
        h5["/measurement/subsamplingIndices"] = np.zeros((1, 2, 16, 9), dtype=np.int32)
    name = "/measurement/subsamplingIndices"
    assert problems(path) == [
        (
            "inconsistent_dimensions",
            name,
            f"{name} has shape (1, 2, 16, 9), expected (1, 2, 16, 10) "
            "(J x C x K x B with B = frames - background frames)",
        )
    ]


def reconstruction(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "r.mdf"
    write_reconstruction(
        path,
        np.ones((1, 8, 1)),
        size=(2, 2, 2),
        field_of_view_m=(1, 1, 1),
        field_of_view_center_m=(0, 0, 0),
        parameters={},
    )
    for name, value in changes.items():
        replace(path, name, value)
    return path


RD = "/reconstruction/data"


@pytest.mark.parametrize(
    "data, code, message",
    [
        (np.ones((1, 8, 1), dtype=np.complex64), "wrong_dtype", f"{RD} has dtype complex64, expected real numbers"),
        (np.ones((8, 1)), "inconsistent_dimensions", f"{RD} has shape (8, 1), expected Q x P x S"),
        (
            np.ones((1, 9, 1)),
            "inconsistent_dimensions",
            f"{RD} has 9 voxels but /reconstruction/size [2, 2, 2] holds 8",
        ),
    ],
)
def test_it_reports_reconstruction_data_it_cannot_use(tmp_path, data, code, message):
    found = problems(reconstruction(tmp_path, **{RD: data}))
    assert found[0] == (code, RD, message)


def test_it_reports_a_reconstruction_without_its_size_or_field_of_view(tmp_path):
    path = reconstruction(tmp_path, **{"/reconstruction/size": None, "/reconstruction/fieldOfView": None})
    assert problems(path) == [
        ("missing_field", "/reconstruction/size", "required field /reconstruction/size is missing"),
        ("missing_field", "/reconstruction/fieldOfView", "required field /reconstruction/fieldOfView is missing"),
    ]


def test_it_reports_non_finite_voxels(tmp_path):
    data = np.ones((1, 8, 1))
    data[0, 5, 0] = np.inf
    assert problems(reconstruction(tmp_path, **{RD: data})) == [
        ("non_finite", RD, f"{RD} holds 0 NaN and 1 Inf values (first at index (0, 5, 0)) in shape (1, 8, 1)")
    ]


def test_the_pair_check_never_raises(tmp_path, monkeypatch):
    import recon.inputs

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(recon.inputs, "check_pair", broken)
    report = validate_pair(calibration(tmp_path), measurement(tmp_path))
    assert (report.valid, report.kind) == (False, "pair")
    assert report.problems == [Problem("internal_error", "", "validator failed: RuntimeError: boom")]


def test_a_pair_with_an_unreadable_file_reports_it_once(tmp_path):
    cal = calibration(tmp_path)
    (tmp_path / "m.mdf").write_bytes(b"")
    report = validate_pair(cal, tmp_path / "m.mdf")
    assert [p.code for p in report.problems] == ["empty_file"]
    assert str(tmp_path / "m.mdf") in report.problems[0].message


def test_a_scan_without_a_background_mask_is_accepted(tmp_path):
    report = validate(measurement(tmp_path, **{BG: None}))
    assert (report.valid, report.kind, report.problems) == (True, "measurement", [])
