"""The benchmark runs every method on one problem and reports ratios, set-up and known iron (tiny size)."""

import pytest

from recon import bench


@pytest.fixture(scope="module")
def result():
    return bench.run_rows(grid=7, rows=60, frames=4, repeats=3, seed=0, kaczmarz_frames=2)


def test_it_times_every_method_with_its_setup(result):
    table = result["table"]
    assert set(table) == {
        "operator",
        "region functionals",
        "CLI default (Kaczmarz, 10 sweeps)",
        "numpy/scipy dense, float32",
        "numpy/scipy dense, float64",
    }
    for row in table.values():
        assert len(row["times_s"]) == 3 and row["fps"] > 0 and row["setup_s"] > 0
    # the functionals' set-up includes the operator's build
    assert table["region functionals"]["setup_s"] >= table["operator"]["setup_s"]


def test_the_operator_agrees_with_the_dense_solve_and_reports_known_iron(result):
    assert result["operator_vs_float64_dense_max_rel_diff"] < 1e-3
    table = result["table"]
    for op_ng, dense_ng in zip(
        table["operator"]["iron_ng"], table["numpy/scipy dense, float64"]["iron_ng"], strict=True
    ):
        assert op_ng == pytest.approx(dense_ng, rel=1e-3)
    # The functionals carry quantify's region estimator: on this phantom (made with the same
    # matrix) they give back the known iron, where plain mask sums of the image fall short.
    for fn_ng, known_ng in zip(table["region functionals"]["iron_ng"], result["known_iron_ng"], strict=True):
        assert fn_ng == pytest.approx(known_ng, rel=0.05)
    assert len(result["known_iron_ng"]) == len(result["organs"]) == 4


def test_its_report_prints_ratios_against_both_baselines(result):
    text = bench.format_report([result], "0.00 0.00 0.00")
    assert "operator / float64 baseline" in text and "/ float32 baseline" in text
    assert "machine load when measured" in text


def test_it_refuses_fewer_than_three_repeats():
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "2"])
