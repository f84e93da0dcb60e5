"""dicom3tools' dciodvfy and dcentvfy find no error in the exported objects, identified or not.

The warnings they still print are listed (and explained) in imaging/dicom/__init__.py;
an unexpected new warning fails test_it_has_only_the_known_warnings.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from imaging.dicom import build_study, deidentify, write_study
from tests.imaging.test_dicom_build import make_case
from tests.services import require_executable

KNOWN_WARNINGS = (
    re.compile(r"Unrecognized defined term <99MPITRIAL> for value 1 of attribute <Coding Scheme Designator>"),
    re.compile(r"Unrecognized defined term <QUANTITY> for value 4 of attribute <(Image|Frame) Type>"),
    re.compile(r"Different information entities for attribute - Element=<AccessionNumber> IE <Series> versus <Study>"),
)


@pytest.fixture(params=["identified", "deidentified"])
def exported(request, tmp_path):
    datasets = build_study(*make_case(patient_name="Doe^Jane", institution_name="Charité Berlin"))
    if request.param == "deidentified":
        datasets = deidentify(datasets, trial_secret=b"validator test trial key", date_shift_days=-21)
    return write_study(datasets, tmp_path / request.param)


def run(tool, *paths):
    completed = subprocess.run([tool, *map(str, paths)], capture_output=True, text=True, timeout=60)
    lines = (completed.stdout + completed.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def test_it_passes_dciodvfy_on_every_object(exported):
    dciodvfy = require_executable("dciodvfy", package="dicom3tools")
    for path in exported:
        errors, _ = run(dciodvfy, path)
        assert errors == [], f"{path.name}: {errors}"


def test_it_passes_dcentvfy_across_the_set(exported):
    dcentvfy = require_executable("dcentvfy", package="dicom3tools")
    errors, _ = run(dcentvfy, *exported)
    assert errors == []


def test_it_has_only_the_known_warnings(exported):
    dciodvfy = require_executable("dciodvfy", package="dicom3tools")
    dcentvfy = require_executable("dcentvfy", package="dicom3tools")
    warnings = [w for path in exported for w in run(dciodvfy, path)[1]] + run(dcentvfy, *exported)[1]
    unexplained = [w for w in warnings if not any(p.search(w) for p in KNOWN_WARNINGS)]
    assert unexplained == []


def test_it_parses_cleanly_with_dcmtk(exported):
    dcmftest = require_executable("dcmftest", package="dcmtk")
    dcmdump = require_executable("dcmdump", package="dcmtk")
    completed = subprocess.run([dcmftest, *map(str, exported)], capture_output=True, text=True, timeout=60)
    assert completed.stdout.count("yes:") == len(exported), completed.stdout
    for path in exported:
        completed = subprocess.run([dcmdump, str(path)], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0 and completed.stderr == "", completed.stderr
