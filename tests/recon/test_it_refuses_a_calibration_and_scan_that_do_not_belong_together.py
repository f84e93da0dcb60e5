"""validate_pair() (and reconstruct, through the same recon.inputs.check_pair)
refuses a calibration and a scan that cannot be reconstructed together, in the
words reconstruct would print, under the code ``not_reconstructable``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.inputs import InputError, check_pair
from recon.mdf import MDFFile
from recon.params import ReconParams
from recon.validate import Problem, validate_pair
from tests.recon.test_mdf_factories import write_fast_calibration, write_time_measurement


def pair(tmp_path: Path, *, C: int = 2, V: int = 30, name: str = "m.mdf") -> tuple[Path, Path]:
    """The default calibration (C=2, V=30, K=16) and a time scan with one background frame."""
    cal, scan = tmp_path / "c.mdf", tmp_path / name
    if not cal.exists():
        write_fast_calibration(cal)
    bg = np.zeros(6, dtype=bool)
    bg[0] = True
    write_time_measurement(scan, C=C, V=V, background=bg)
    return cal, scan


def edit(path: Path, name: str, value) -> None:
    with h5py.File(path, "r+") as h5:
        if name in h5:
            del h5[name]
        if value is not None:
            h5[name] = value


def refusal(cal: Path, scan: Path) -> Problem:
    report = validate_pair(cal, scan)
    assert not report.valid and report.kind == "pair"
    assert report.problems[-1].code == "not_reconstructable", report.problems
    return report.problems[-1]


def test_a_matching_pair_is_accepted(tmp_path):
    report = validate_pair(*pair(tmp_path))
    assert (report.valid, report.problems, report.version) == (True, [], "2.1.0")


@pytest.mark.parametrize(
    "C, V, message",
    [
        (3, 30, "system matrix and measurement differ in receive channels: 2 vs 3"),
        (2, 16, "system matrix and measurement differ in sampling points: 30 vs 16"),
    ],
)
def test_it_refuses_a_scan_with_other_receiver_settings(tmp_path, C, V, message):
    cal, scan = pair(tmp_path, C=C, V=V)
    assert refusal(cal, scan) == Problem("not_reconstructable", "", message)


def test_it_refuses_a_scan_with_another_base_frequency(tmp_path):
    cal, scan = pair(tmp_path)
    with MDFFile(cal) as f:
        base = f.base_frequency_hz
    edit(scan, "/acquisition/drivefield/baseFrequency", base * 2)
    assert refusal(cal, scan).message == (
        f"system matrix and measurement differ in base frequency (Hz): {base} vs {base * 2}"
    )


def test_it_refuses_a_scan_with_other_dividers(tmp_path):
    cal, scan = pair(tmp_path)
    edit(scan, "/acquisition/drivefield/divider", np.array([[102], [98]]))
    assert refusal(cal, scan).message.startswith("system matrix and measurement differ in dividers: ")


def test_it_refuses_a_calibration_given_as_the_scan(tmp_path):
    cal, _ = pair(tmp_path)
    assert refusal(cal, cal) == Problem("not_reconstructable", "", f"{cal}: expected a measurement, got a calibration")


def test_it_refuses_a_calibration_without_a_grid_size(tmp_path):
    cal, scan = pair(tmp_path)
    edit(cal, "/calibration/size", None)
    report = validate_pair(cal, scan)
    assert [(p.code, p.path) for p in report.problems] == [
        ("missing_field", "/calibration/size"),
        ("not_reconstructable", "/calibration/size"),
    ]
    assert report.problems[1].message == f"{cal}: calibration has no /calibration/size"


def test_it_refuses_an_snr_that_is_not_j_by_c_by_k(tmp_path):
    cal, scan = pair(tmp_path)
    edit(cal, "/calibration/snr", np.ones((2, 16)))
    problem = refusal(cal, scan)
    assert problem == Problem(
        "not_reconstructable", "/calibration/snr", f"{cal}: /calibration/snr has shape (2, 16), expected J x C x K"
    )


def test_check_pair_refuses_an_empty_bore_scan_with_other_settings(tmp_path):
    cal, scan = pair(tmp_path)
    _, empty = pair(tmp_path, C=3, name="empty.mdf")
    refused = r"^system matrix and empty-bore scan differ in receive channels: 2 vs 3$"
    with MDFFile(cal) as smf, MDFFile(scan) as mf, MDFFile(empty) as bf, pytest.raises(InputError, match=refused):
        check_pair(smf, mf, ReconParams(background=str(empty)), background=bf)


def test_check_pair_keeps_only_frequencies_the_empty_bore_scan_also_stores(tmp_path):
    cal, scan = pair(tmp_path)
    empty = tmp_path / "empty.mdf"
    write_fast_calibration(empty)  # a spectral file with every frequency ...
    with h5py.File(empty, "r+") as h5:  # ... relabelled as a measurement storing frequencies 0..7 only
        del h5["/calibration"]
        spec = h5["/measurement/data"][()]
        del h5["/measurement/data"]
        h5["/measurement/data"] = np.ascontiguousarray(spec[:, :, :8, :])
        h5["/measurement/isFrequencySelection"][()] = 1
        h5["/measurement/frequencySelection"] = np.arange(1, 9)
    with MDFFile(cal) as smf, MDFFile(scan) as mf, MDFFile(empty) as bf:
        plan = check_pair(smf, mf, ReconParams(background=str(empty)), background=bf)
    assert plan.available.tolist() == [True] * 8 + [False] * 8
    assert plan.notes == ["frequency selection: 8 of 16 frequencies stored in both files"]
