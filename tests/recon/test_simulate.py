"""Simulator output files: MDF contents, ROIs, ground truth."""

import json

import numpy as np
import pytest

from recon.mdf import MDFFile
from recon.simulate import simulate_to_files


@pytest.fixture(scope="module")
def sim2d(tmp_path_factory):
    return simulate_to_files(tmp_path_factory.mktemp("sim2d"), dims=2, frames=6, seed=3, empty_bore_frames=4)


def test_it_returns_a_json_serialisable_record(sim2d):
    assert json.loads(json.dumps(sim2d)) == sim2d
    assert set(sim2d["truth"]) == {"heart", "lung_left", "lung_right", "liver"}
    assert sim2d["truth"]["heart"] == pytest.approx(2000.0)
    assert sim2d["injected_iron_ng"] == pytest.approx(sum(sim2d["truth"].values()))


def test_it_writes_a_calibration_with_snr_and_delta_sample(sim2d):
    with MDFFile(sim2d["system_matrix"]) as f:
        assert f.kind == "calibration"
        assert tuple(f.calibration_size) == (20, 20, 1)
        assert f.snr.shape == (1, 2, 817)
        assert f.tracer_concentration_mol_per_l == pytest.approx(sim2d["delta_concentration_mol_per_l"])
        s, bg = f.system_matrix(frequencies=[100, 200])
        assert s.shape == (2, 2, 400) and bg.shape == (2, 2, 20)


def test_it_writes_a_time_domain_scan_with_background_blocks(sim2d):
    with MDFFile(sim2d["measurement"]) as f:
        assert f.kind == "measurement"
        assert f.num_frames == 16
        assert f.is_background_frame.tolist() == [True] * 5 + [False] * 6 + [True] * 5
        assert f.spectra(frames=[0]).shape == (1, 1, 2, 817)
    with MDFFile(sim2d["empty_bore"]) as f:
        assert f.num_frames == 4


def test_it_writes_rois_matching_the_truth(sim2d):
    with open(sim2d["rois"]) as fh:
        rois = json.load(fh)["rois"]
    assert [r["name"] for r in rois] == list(sim2d["truth"])
    assert {r["kind"] for r in rois} == {"target", "lungs", "liver"}
    truth_image = np.load(sim2d["truth_image"])
    voxel_l = np.prod(np.array(sim2d["field_of_view_m"]) / np.array(sim2d["size"])) * 1e3
    total_ng = truth_image.sum() * voxel_l * 55.845e9
    assert total_ng == pytest.approx(sim2d["injected_iron_ng"], rel=1e-9)
