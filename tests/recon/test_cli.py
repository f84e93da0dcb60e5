"""python -m recon: JSON on stdout, one 'error:' line on stderr, documented exit codes.

The numerics modules (recon.simulate, recon.params, recon.pipeline,
recon.quantify, recon.bench) are replaced by stand-ins here, so these tests
pin the argument mapping whether or not the real modules exist yet.
"""

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main
from tests.recon.test_mdf_factories import FIXTURE, write_fast_calibration, write_time_measurement

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def stand_in(monkeypatch, name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return module


# -- info / validate ---------------------------------------------------------- #


def test_it_prints_info_as_json(capsys):
    code, out, err = run(capsys, "info", str(FIXTURE))
    assert code == 0 and err == ""
    info = json.loads(out)
    assert (info["frames"], info["samples_per_period"], info["calibration"]["size"]) == (9, 152, [9, 1, 1])


def test_it_prints_info_of_a_reconstruction(capsys, tmp_path):
    from recon.mdf import write_reconstruction

    write_reconstruction(
        tmp_path / "r.mdf",
        np.zeros((1, 8, 1)),
        size=(2, 2, 2),
        field_of_view_m=(1, 1, 1),
        field_of_view_center_m=(0, 0, 0),
        parameters={"solver": "cgnr"},
    )
    code, out, _ = run(capsys, "info", str(tmp_path / "r.mdf"))
    info = json.loads(out)
    assert code == 0 and info["kind"] == "reconstruction"
    assert info["reconstruction"]["size"] == [2, 2, 2] and info["reconstruction"]["parameters"] == {"solver": "cgnr"}
    assert info["reconstruction"]["unit"] == "mol/L"


@pytest.mark.parametrize("content", [None, b"", b"garbage" * 100])
def test_it_fails_info_on_a_bad_file_with_exit_2(capsys, tmp_path, content):
    path = tmp_path / "bad.mdf"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "info", str(path))
    assert code == 2 and out == ""
    assert str(path) in assert_one_error_line(err)


def test_it_validates_a_good_file_with_exit_0(capsys, tmp_path):
    write_fast_calibration(tmp_path / "c.mdf")
    code, out, err = run(capsys, "validate", str(tmp_path / "c.mdf"))
    assert code == 0 and err == ""
    assert json.loads(out)["valid"] is True


def test_it_validates_a_bad_file_with_exit_1(capsys, tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    import h5py

    with h5py.File(path, "r+") as h5:
        h5["/measurement/data"][0, 0, 0, 0] = np.nan
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1
    assert json.loads(out)["problems"][0]["code"] == "non_finite"
    assert "non_finite" in assert_one_error_line(err)


# -- argument errors ------------------------------------------------------------ #


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["info"],
        ["reconstruct", "--system-matrix", "a.mdf"],
        ["reconstruct", "--system-matrix", "a", "--measurement", "b", "--output", "c", "--iterations", "0"],
        ["reconstruct", "--system-matrix", "a", "--measurement", "b", "--output", "c", "--channels", "0,1"],
        ["reconstruct", "--system-matrix", "a", "--measurement", "b", "--output", "c", "--frames", "10:5"],
        ["reconstruct", "--system-matrix", "a", "--measurement", "b", "--output", "c", "--solver", "magic"],
        ["simulate"],
        ["quantify", "--reconstruction", "r.mdf"],
    ],
)
def test_it_rejects_bad_arguments_with_one_line_and_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_error_line(err)


def test_it_reports_an_unexpected_failure_with_exit_3(capsys, monkeypatch):
    def simulate_to_files(output_dir, **kwargs):
        raise RuntimeError("kernel\nexploded")

    stand_in(monkeypatch, "recon.simulate", simulate_to_files=simulate_to_files)
    code, out, err = run(capsys, "simulate", "--output-dir", "x")
    assert code == 3 and out == ""
    assert assert_one_error_line(err) == "error: unexpected RuntimeError: kernel exploded"


def test_it_maps_value_errors_from_the_numerics_to_exit_2(capsys, monkeypatch):
    def quantify_file(reconstruction_path, rois_path, **kwargs):
        raise ValueError("ROI 'liver' lies outside the 20 x 20 x 10 grid")

    stand_in(monkeypatch, "recon.quantify", quantify_file=quantify_file)
    code, _, err = run(capsys, "quantify", "--reconstruction", "r.mdf", "--rois", "rois.json")
    assert code == 2
    assert assert_one_error_line(err) == "error: ROI 'liver' lies outside the 20 x 20 x 10 grid"


def test_it_names_a_numerics_module_that_cannot_be_imported(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "recon.pipeline", None)  # makes the import fail
    stand_in(monkeypatch, "recon.params", ReconParams=dict)
    code, _, err = run(capsys, "reconstruct", "--system-matrix", "a", "--measurement", "b", "--output", "c")
    assert code == 3
    assert "recon.pipeline" in assert_one_error_line(err)


@pytest.mark.parametrize("argv", [["info", "/no/such/file.mdf"], ["reconstruct", "--bogus"], ["validate"]])
def test_it_never_prints_a_traceback_in_a_real_process(argv):
    proc = subprocess.run([sys.executable, "-m", "recon", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error_line(proc.stderr)


# -- argument mapping onto the numerics ----------------------------------------- #


def test_it_passes_simulate_options_through(capsys, monkeypatch, tmp_path):
    calls = []

    def simulate_to_files(output_dir, **kwargs):
        calls.append((output_dir, kwargs))
        return {"system_matrix": str(tmp_path / "sm.mdf"), "true_iron_ng": {"heart": np.float64(12.5)}}

    stand_in(monkeypatch, "recon.simulate", simulate_to_files=simulate_to_files)
    code, out, err = run(
        capsys,
        "simulate",
        "--output-dir",
        str(tmp_path),
        "--dims",
        "3",
        "--phantom",
        "points",
        "--seed",
        "7",
        "--frames",
        "20",
        "--noise",
        "0.01",
    )
    assert code == 0 and err == ""
    assert calls == [(str(tmp_path), {"dims": 3, "phantom": "points", "seed": 7, "frames": 20, "noise_std_v": 0.01})]
    assert json.loads(out)["true_iron_ng"] == {"heart": 12.5}

    calls.clear()
    run(capsys, "simulate", "--output-dir", "d")
    assert calls == [("d", {})]  # defaults live in simulate_to_files


@dataclasses.dataclass(frozen=True)
class FakeParams:
    solver: str = "kaczmarz"
    lambda_: float = 1e-3
    iterations: int = 3
    snr_threshold: float = 5.0
    min_freq_hz: float = 80e3
    max_freq_hz: float | None = None
    max_rows: int | None = None
    channels: tuple | None = None
    frames: tuple | None = None
    average: int = 1
    background: str = "mean"


@dataclasses.dataclass
class FakeResult:
    output_path: str
    shape: tuple
    solver: str
    timings_s: dict
    image: np.ndarray

    def as_dict(self):  # like ReconstructionResult.as_dict: a summary, never the voxels
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "image"}


def test_it_builds_recon_params_from_only_the_given_options(capsys, monkeypatch, tmp_path):
    calls = []

    def reconstruct_file(system_matrix_path, measurement_path, output_path, params, progress=None):
        calls.append((system_matrix_path, measurement_path, output_path, params))
        progress("solve", 0.5)
        progress("write", 1.0)
        return FakeResult(output_path, (1, 8000, 1), params.solver, {"solve": 1.25}, np.zeros((1, 8000, 1)))

    stand_in(monkeypatch, "recon.params", ReconParams=FakeParams)
    stand_in(monkeypatch, "recon.pipeline", reconstruct_file=reconstruct_file)
    code, out, err = run(
        capsys,
        "reconstruct",
        "--system-matrix",
        "sm.mdf",
        "--measurement",
        "m.mdf",
        "--output",
        "o.mdf",
        "--solver",
        "fista",
        "--lambda",
        "0.01",
        "--iterations",
        "5",
        "--snr-threshold",
        "3",
        "--min-freq",
        "80000",
        "--max-freq",
        "1e6",
        "--max-rows",
        "2000",
        "--channels",
        "1,3",
        "--frames",
        "0:100",
        "--average",
        "10",
        "--background",
        "interpolate",
    )
    assert code == 0
    assert calls == [
        (
            "sm.mdf",
            "m.mdf",
            "o.mdf",
            FakeParams(
                solver="fista",
                lambda_=0.01,
                iterations=5,
                snr_threshold=3.0,
                min_freq_hz=80000.0,
                max_freq_hz=1e6,
                max_rows=2000,
                channels=(0, 2),
                frames=(0, 100),
                average=10,
                background="interpolate",
            ),
        )
    ]
    summary = json.loads(out)
    assert summary == {
        "output": "o.mdf",
        "output_path": "o.mdf",
        "shape": [1, 8000, 1],
        "solver": "fista",
        "timings_s": {"solve": 1.25},
    }  # the 8000-voxel image is not dumped
    assert err.splitlines() == ["progress: solve  50.0%", "progress: write 100.0%"]

    calls.clear()
    run(
        capsys,
        "reconstruct",
        "--system-matrix",
        "a",
        "--measurement",
        "b",
        "--output",
        "c",
        "--frames",
        "5:",
        "--background",
        "/data/empty_bore.mdf",
    )
    assert calls[0][3] == FakeParams(frames=(5, None), background="/data/empty_bore.mdf")


def test_it_passes_quantify_options_through(capsys, monkeypatch):
    @dataclasses.dataclass
    class Quantification:
        rois: list
        retention_percent: float

    calls = []

    def quantify_file(reconstruction_path, rois_path, **kwargs):
        calls.append((reconstruction_path, rois_path, kwargs))
        return Quantification([{"name": "heart", "iron_mass_ng": np.float32(3.5)}], 42.0)

    stand_in(monkeypatch, "recon.quantify", quantify_file=quantify_file)
    code, out, _ = run(capsys, "quantify", "--reconstruction", "o.mdf", "--rois", "r.json", "--k", "5")
    assert code == 0 and calls == [("o.mdf", "r.json", {"k": 5.0})]
    assert json.loads(out) == {"rois": [{"name": "heart", "iron_mass_ng": 3.5}], "retention_percent": 42.0}


def test_it_hands_every_bench_argument_to_recon_bench(capsys, monkeypatch):
    seen = []
    stand_in(monkeypatch, "recon.bench", main=lambda argv: seen.append(argv) or 0)
    code, _, _ = run(capsys, "bench", "--sizes", "19,37", "--help")
    assert code == 0 and seen == [["--sizes", "19,37", "--help"]]


def test_it_passes_the_memory_budget_and_the_operator_cache(capsys, monkeypatch):
    calls = []

    def reconstruct_file(system_matrix_path, measurement_path, output_path, params, progress=None, **extra):
        calls.append((params, extra))
        return FakeResult(output_path, (1, 8, 1), params.solver, {}, np.zeros((1, 8, 1)))

    stand_in(monkeypatch, "recon.pipeline", reconstruct_file=reconstruct_file)
    args = ["reconstruct", "--system-matrix", "s", "--measurement", "m", "--output", "o", "--solver", "fast"]
    code, _, _ = run(capsys, *args, "--memory-budget-mb", "512", "--operator-cache", "ops")
    assert code == 0
    params, extra = calls[0]
    assert params.memory_budget_bytes == 512 * 2**20 and params.solver == "fast"
    assert extra == {"operator_cache_dir": "ops"}
