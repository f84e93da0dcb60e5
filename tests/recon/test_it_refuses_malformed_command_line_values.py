"""python -m recon: a malformed option value is refused in one 'error:' line
naming the option and the value (exit 2); results with numpy values, complex
numbers, non-finite floats and paths still print as plain JSON; an interrupt
and --help behave as a shell user expects."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from recon.cli import main

RECON = ["reconstruct", "--system-matrix", "a.mdf", "--measurement", "b.mdf", "--output", "c.mdf"]
PROG = "error: python -m recon reconstruct: argument"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stand_in(monkeypatch, name: str, **attrs) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--channels", "1,b", "--channels: channels must be comma-separated integers like 1,2, got '1,b'"),
        ("--channels", ",", "--channels: channels are numbered from 1, got ','"),
        ("--frames", "5", "--frames: frames must be START:STOP like 0:100, got '5'"),
        ("--frames", "0:1:2", "--frames: frames must be START:STOP like 0:100, got '0:1:2'"),
        ("--frames", "a:9", "--frames: frames must be START:STOP integers like 0:100, got 'a:9'"),
        ("--iterations", "ten", "--iterations: expected a positive integer, got 'ten'"),
        ("--average", "-2", "--average: expected a positive integer, got -2"),
        ("--lambda", "small", "--lambda: expected a number, got 'small'"),
        ("--snr-threshold", "-1", "--snr-threshold: expected a finite number >= 0, got '-1'"),
        ("--max-freq", "inf", "--max-freq: expected a finite number >= 0, got 'inf'"),
        ("--min-freq", "nan", "--min-freq: expected a finite number >= 0, got 'nan'"),
    ],
)
def test_it_refuses_a_malformed_option_value(capsys, option, value, message):
    code, out, err = run(capsys, *RECON, f"{option}={value}")
    assert (code, out) == (2, "")
    assert err == f"{PROG} {message}\n"


@pytest.mark.parametrize("text, frames", [("10:", [10, None]), (":50", [None, 50])])
def test_it_accepts_an_open_ended_frame_range(capsys, monkeypatch, text, frames):
    seen = []

    class Result:
        def as_dict(self):
            return {}

    def reconstruct_file(cal, meas, out, params, progress=None, **extra):
        seen.append(params)
        return Result()

    stand_in(monkeypatch, "recon.params", ReconParams=dict)
    stand_in(monkeypatch, "recon.pipeline", reconstruct_file=reconstruct_file)
    code, out, _ = run(capsys, *RECON, "--frames", text)
    assert code == 0 and json.loads(out) == {"output": "c.mdf"}
    assert list(seen[0]["frames"]) == frames


def test_it_prints_numpy_complex_non_finite_and_path_values_as_plain_json(capsys, monkeypatch):
    class Opaque:
        def __repr__(self):
            return "<opaque>"

    result = {
        "mean": np.float32(0.5),
        "counts": np.arange(3),
        "volume": np.zeros(65),  # a data dump, left out of the summary
        "grid": np.zeros((2, 2)),
        "phase": complex(1.0, -2.0),
        "missing": float("nan"),
        "top": float("inf"),
        "bottom": -float("inf"),
        "file": Path("/data/r.mdf"),
        "tags": ("a", 1),
        "other": Opaque(),
    }
    stand_in(monkeypatch, "recon.quantify", quantify_file=lambda recon, rois, **kw: result)
    code, out, err = run(capsys, "quantify", "--reconstruction", "r.mdf", "--rois", "rois.json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "mean": 0.5,
        "counts": [0, 1, 2],
        "grid": [[0.0, 0.0], [0.0, 0.0]],
        "phase": {"real": 1.0, "imag": -2.0},
        "missing": None,
        "top": "Infinity",
        "bottom": "-Infinity",
        "file": "/data/r.mdf",
        "tags": ["a", 1],
        "other": "<opaque>",
    }


def test_it_reports_an_interrupt_in_one_line_with_exit_130(capsys, monkeypatch):
    def quantify_file(recon, rois, **kw):
        raise KeyboardInterrupt

    stand_in(monkeypatch, "recon.quantify", quantify_file=quantify_file)
    code, out, err = run(capsys, "quantify", "--reconstruction", "r.mdf", "--rois", "rois.json")
    assert (code, out, err) == (130, "", "error: interrupted\n")


def test_help_prints_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["info", "--help"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and err == ""
    assert out.startswith("usage: python -m recon info [-h] file")


def test_it_drops_a_leading_double_dash_before_bench_arguments(capsys, monkeypatch):
    seen = []
    stand_in(monkeypatch, "recon.bench", main=lambda argv: seen.append(argv))
    code, _, _ = run(capsys, "bench", "--", "--sizes", "19")
    assert code == 0 and seen == [["--sizes", "19"]]
