"""recon.simulate: a 1D scanner with the sphere phantom written to MDF and
read back, and the refusals of every entry point."""

import json

import numpy as np
import pytest

from recon import phantoms, simulate
from recon.mdf import MDFFile
from recon.physics import IRON_MOLAR_MASS_G_PER_MOL, Particles


@pytest.fixture(scope="module")
def sim1d(tmp_path_factory):
    return simulate.simulate_to_files(
        tmp_path_factory.mktemp("sim1d"),
        dims=1,
        phantom="spheres",
        grid=(16, 1, 1),
        frames=3,
        background_frames=(2, 2),
        delta_subsamples=3,
        seed=5,
    )


def test_the_1d_sphere_simulation_writes_files_that_read_back(sim1d):
    assert json.loads(json.dumps(sim1d)) == sim1d
    assert sim1d["dims"] == 1 and sim1d["phantom"] == "spheres" and sim1d["size"] == [16, 1, 1]
    assert sim1d["truth"] == pytest.approx({"large": 1000.0, "small": 300.0}, rel=1e-12)
    assert sim1d["kinds"] == {"large": "target", "small": "other"}
    # One drive channel of 12 mT over |G| = 1 T/m: a 24 mm line, 1 mm slab.
    assert sim1d["field_of_view_m"] == pytest.approx([24e-3, 1e-3, 1e-3])
    with MDFFile(sim1d["system_matrix"]) as f:
        assert f.kind == "calibration"
        assert tuple(f.calibration_size) == (16, 1, 1)
        s, bg = f.system_matrix(frequencies=[3, 6])
        assert s.shape == (1, 2, 16) and bg.shape == (1, 2, 20)  # (channels, frequencies, voxels)
    with MDFFile(sim1d["measurement"]) as f:
        assert f.num_frames == 7
        assert f.is_background_frame.tolist() == [True, True, False, False, False, True, True]
    with open(sim1d["rois"], encoding="utf-8") as fh:
        rois = json.load(fh)["rois"]
    assert [(r["name"], r["shape"]) for r in rois] == [("large", "sphere"), ("small", "sphere")]
    truth_image = np.load(sim1d["truth_image"])
    voxel_l = np.prod(np.array(sim1d["field_of_view_m"]) / np.array(sim1d["size"])) * 1e3
    total_ng = truth_image.sum() * voxel_l * IRON_MOLAR_MASS_G_PER_MOL * 1e9
    assert total_ng == pytest.approx(1300.0, rel=1e-9)


def test_it_refuses_an_unknown_phantom_or_a_grid_without_three_entries(tmp_path):
    with pytest.raises(ValueError, match=r"phantom must be one of \['mouse', 'points', 'spheres'\], got 'rat'"):
        simulate.simulate_to_files(tmp_path / "a", phantom="rat")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match=r"grid needs 3 entries \(x, y, z\), got \(8, 8\)"):
        simulate.simulate_to_files(tmp_path / "b", grid=(8, 8))
    assert list((tmp_path / "b").iterdir()) == []


def test_it_refuses_a_scanner_of_four_dimensions():
    with pytest.raises(ValueError, match="dims must be 1, 2 or 3, got 4"):
        simulate.scanner_preset(4)


def test_it_refuses_a_grid_along_an_undriven_axis():
    scanner = simulate.scanner_preset(2, fast=True)
    with pytest.raises(ValueError, match="axis 2 is not driven, so its grid size must be 1, got 3"):
        simulate.system_matrix_geometry(scanner, (8, 8, 3))


def test_it_refuses_an_snr_from_a_single_background_frame():
    with pytest.raises(ValueError, match="SNR needs at least 2 background frames, got 1"):
        simulate.calibration_snr(np.ones((2, 5, 4), complex), np.ones((2, 5, 1), complex))


def test_it_refuses_a_scan_without_frames():
    scanner = simulate.scanner_preset(2, fast=True)
    fov, center = simulate.system_matrix_geometry(scanner, (4, 4, 1))
    raster = phantoms.rasterise(phantoms.spheres(fov), (4, 4, 1), fov, center, factor=3)
    with pytest.raises(ValueError, match="frames must be >= 1, got 0"):
        simulate.simulate_scan(scanner, Particles(), raster, rng=np.random.default_rng(0), frames=0)


def test_it_refuses_to_write_a_frequency_reduced_calibration(tmp_path):
    scanner = simulate.scanner_preset(2, fast=True)
    sm = simulate.simulate_system_matrix(
        scanner, Particles(), (4, 4, 1), rng=np.random.default_rng(0), frequency_index=np.array([16, 17, 32])
    )
    assert sm.system_matrix.shape == (2, 3, 16)
    target = tmp_path / "sm.mdf"
    with pytest.raises(ValueError, match="a frequency-reduced system matrix is not written to MDF"):
        simulate.write_system_matrix_mdf(str(target), sm)
    assert not target.exists()
