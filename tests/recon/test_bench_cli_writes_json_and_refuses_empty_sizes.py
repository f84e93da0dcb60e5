"""recon.bench: the command line writes its JSON and report, refuses empty
sizes, and the timing helpers degrade to zero where /proc cannot be read."""

import json

import pytest

from recon import bench


def test_main_prints_the_report_and_writes_every_size_to_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--grid", "5", "--rows", "30,40", "--frames", "2", "--kaczmarz-frames", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("== 5^3 = 125 voxels") == 2
    assert "30 complex rows" in text and "40 complex rows" in text
    results = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert [r["complex_rows"] for r in results] == [30, 40]
    assert all(r["voxels"] == 125 and r["grid"] == 5 for r in results)
    assert all(len(r["table"]["operator"]["times_s"]) == 3 for r in results)


@pytest.mark.parametrize("argv", [["--rows", "0"], ["--grid", "0"], ["--frames", "0"], ["--kaczmarz-frames", "-1"]])
def test_main_refuses_an_empty_size(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    assert exc.value.code == 2
    assert "grid, rows and frames must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("rows", ["abc", "2000,", "1e3"])
def test_main_refuses_rows_that_are_not_whole_numbers(rows, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--rows", rows])
    assert exc.value.code == 2
    assert f"--rows takes comma-separated whole numbers, got {rows!r}" in capsys.readouterr().err


def test_measured_reports_zero_peak_where_proc_cannot_be_read(monkeypatch):
    def no_proc(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(bench, "open", no_proc, raising=False)
    out, seconds, peak = bench.measured(lambda: sum(range(1000)))
    assert out == 499500
    assert seconds >= 0.0
    assert peak == 0


def test_measured_reads_the_peak_from_proc_status():
    # Allocate 64 MiB inside the call: the peak RSS grows by at least ~most of it.
    out, _, peak = bench.measured(lambda: bytearray(64 * 2**20))
    assert len(out) == 64 * 2**20
    assert peak >= 32 * 2**20
