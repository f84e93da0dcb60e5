"""validate() turns any file into a report with specific problem codes and never raises."""

import json
import os

import h5py
import numpy as np
import pytest

from recon.mdf import write_reconstruction
from recon.validate import ValidationReport, validate
from tests.recon.test_mdf_factories import FIXTURE, write_fast_calibration, write_time_measurement


def codes(report: ValidationReport) -> list[str]:
    return [p.code for p in report.problems]


def only_problem(report: ValidationReport):
    assert not report.valid
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


def test_it_reads_the_real_fixture_and_flags_only_its_zero_tracer_concentration():
    """The 2018 robot calibration stores /tracer/concentration = 0: readable, but reconstruct refuses it."""
    report = validate(FIXTURE)
    assert (report.kind, report.version) == ("calibration", "2.0")
    problem = only_problem(report)
    assert (problem.code, problem.path) == ("not_reconstructable", "/tracer/concentration")
    assert "/tracer/concentration missing or not > 0 (0.0)" in problem.message


def test_it_accepts_files_the_platform_writes(tmp_path):
    write_time_measurement(tmp_path / "m.mdf")
    write_fast_calibration(tmp_path / "c.mdf")
    write_reconstruction(
        tmp_path / "r.mdf",
        np.ones((1, 8, 1)),
        size=(2, 2, 2),
        field_of_view_m=(1, 1, 1),
        field_of_view_center_m=(0, 0, 0),
        parameters={},
    )
    for name, kind in (("m.mdf", "measurement"), ("c.mdf", "calibration"), ("r.mdf", "reconstruction")):
        report = validate(tmp_path / name)
        assert report.valid, (name, report.problems)
        assert report.kind == kind and report.version == "2.1.0"


def test_it_reports_a_missing_path(tmp_path):
    problem = only_problem(validate(tmp_path / "nope.mdf"))
    assert problem.code == "not_found" and "no such file" in problem.message


def test_it_reports_a_directory(tmp_path):
    assert only_problem(validate(tmp_path)).code == "not_a_file"


def test_it_reports_an_empty_file(tmp_path):
    (tmp_path / "e.mdf").write_bytes(b"")
    assert only_problem(validate(tmp_path / "e.mdf")).code == "empty_file"


def test_it_reports_a_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "x.mdf").write_bytes(os.urandom(1000))
    problem = only_problem(validate(tmp_path / "x.mdf"))
    assert problem.code == "not_hdf5" and "1000 bytes" in problem.message


def test_it_reports_a_file_cut_in_half(tmp_path):
    path = tmp_path / "t.mdf"
    write_time_measurement(path, N=40, V=512)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    problem = only_problem(validate(path))
    assert problem.code == "truncated" and "truncated" in problem.message


def test_it_reports_a_missing_required_field(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    with h5py.File(path, "r+") as h5:
        del h5["/acquisition/receiver/bandwidth"]
    problem = only_problem(validate(path))
    assert (problem.code, problem.path) == ("missing_field", "/acquisition/receiver/bandwidth")


def test_it_reports_inconsistent_dimensions(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path, N=6, J=2, C=3, V=16)
    with h5py.File(path, "r+") as h5:
        h5["/acquisition/receiver/numChannels"][()] = 4
        h5["/acquisition/receiver/numSamplingPoints"][()] = 20
    report = validate(path)
    assert codes(report) == ["inconsistent_dimensions", "inconsistent_dimensions"]
    messages = " | ".join(p.message for p in report.problems)
    assert "3 receive channels in shape (6, 2, 3, 16)" in messages and "numChannels is 4" in messages
    assert "16 samples per period" in messages and "numSamplingPoints is 20" in messages


def test_it_reports_a_calibration_grid_that_does_not_match_the_frames(tmp_path):
    path = tmp_path / "c.mdf"
    write_fast_calibration(path, size=(4, 3, 2), n_background=2)
    with h5py.File(path, "r+") as h5:
        h5["/calibration/size"][...] = [5, 3, 2]
        del h5["/calibration/snr"]
        h5["/calibration/snr"] = np.ones((1, 2, 5))
    report = validate(path)
    assert codes(report) == ["inconsistent_dimensions", "inconsistent_dimensions"]
    assert "grid [5, 3, 2] has 30 positions plus 2 background frames = 32" in report.problems[0].message
    assert report.problems[1].path == "/calibration/snr"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_it_reports_non_finite_samples(tmp_path, bad):
    path = tmp_path / "m.mdf"
    write_time_measurement(path, N=6, J=2, C=3, V=16)
    with h5py.File(path, "r+") as h5:
        h5["/measurement/data"][4, 1, 2, 7] = bad
    problem = only_problem(validate(path))
    assert problem.code == "non_finite" and problem.path == "/measurement/data"
    assert "(first at index (4, 1, 2, 7))" in problem.message
    assert ("1 NaN" if np.isnan(bad) else "1 Inf") in problem.message


def test_it_reports_non_finite_values_in_complex_data(tmp_path):
    path = tmp_path / "c.mdf"
    write_fast_calibration(path)
    with h5py.File(path, "r+") as h5:
        h5["/measurement/data"][0, 1, 3, 5] = complex(1.0, np.nan)
    problem = only_problem(validate(path))
    assert problem.code == "non_finite" and "(first at index (0, 1, 3, 5))" in problem.message


def test_it_scans_for_nan_in_bounded_blocks(tmp_path, monkeypatch):
    import recon.validate as v

    monkeypatch.setattr(v, "_SCAN_BLOCK_BYTES", 1000)  # forces many blocks on a small file
    path = tmp_path / "m.mdf"
    write_time_measurement(path, N=30, V=64)
    with h5py.File(path, "r+") as h5:
        h5["/measurement/data"][29, 0, 0, 0] = np.nan
        h5["/measurement/data"][3, 1, 2, 5] = np.nan
    problem = only_problem(validate(path))
    assert "2 NaN and 0 Inf" in problem.message and "(first at index (3, 1, 2, 5))" in problem.message


def test_it_reports_string_data_as_wrong_dtype(tmp_path):
    path = tmp_path / "s.mdf"
    write_time_measurement(path)
    with h5py.File(path, "r+") as h5:
        del h5["/measurement/data"]
        h5["/measurement/data"] = np.array([b"not numbers"] * 6)
    problem = only_problem(validate(path))
    assert (problem.code, problem.path) == ("wrong_dtype", "/measurement/data")


def test_it_reports_an_unsupported_version(tmp_path):
    path = tmp_path / "v.mdf"
    write_time_measurement(path)
    with h5py.File(path, "r+") as h5:
        del h5["/version"]
        h5["/version"] = np.bytes_("1.0.5")
    report = validate(path)
    assert "unsupported_version" in codes(report) and report.version == "1.0.5"


def test_it_reports_an_hdf5_file_that_is_not_mdf(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as h5:
        h5["something"] = np.arange(3)
    report = validate(path)
    assert not report.valid and "missing_field" in codes(report)
    assert any(p.path == "/version" for p in report.problems)


def test_it_never_raises_even_when_the_checks_break(tmp_path, monkeypatch):
    import recon.validate as v

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(v, "_check_general", broken)
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    problem = only_problem(validate(path))
    assert problem.code == "internal_error" and "RuntimeError: boom" in problem.message


def test_it_serialises_the_report_as_json(tmp_path):
    report = validate(tmp_path / "nope.mdf")
    data = json.loads(json.dumps(report.as_dict()))
    assert data == {
        "valid": False,
        "kind": None,
        "version": None,
        "problems": [{"code": "not_found", "path": "", "message": report.problems[0].message}],
    }
