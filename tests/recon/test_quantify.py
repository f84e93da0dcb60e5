"""Quantification on analytic images: masks, iron mass, detection, retention."""

import numpy as np
import pytest

from recon import quantify as qf

GRID = qf.Grid((20, 20, 1), (20e-3, 20e-3, 1e-3))
NG_PER_MOL_L = GRID.voxel_volume_l * 55.845e9  # ng in one voxel at 1 mol/L
EXACT_REL = 1e-9


def _image(level=0.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    c = np.full(GRID.num_voxels, level) + noise * rng.standard_normal(GRID.num_voxels)
    target = qf.mask_from_geometry(GRID, "sphere", (-5e-3, 0, 0), 3e-3)
    liver = qf.mask_from_geometry(GRID, "box", (5e-3, 0, 0), (2e-3, 4e-3, 1e-3))
    c[target] += 1e-3
    c[liver] += 5e-4
    return c, [qf.Roi("target", "target", target), qf.Roi("liver", "liver", liver)]


def test_it_builds_masks_from_geometry():
    sphere = qf.mask_from_geometry(GRID, "sphere", (0, 0, 0), 2.1e-3)
    assert sphere.sum() == 12  # centres at (±0.5|±1.5, ±0.5|±1.5) mm; the four (±1.5, ±1.5) lie at 2.12 mm
    box = qf.mask_from_geometry(GRID, "box", (0, 0, 0), (2e-3, 1e-3, 5e-4))
    assert box.sum() == 8
    assert qf.mask_from_geometry(GRID, "sphere", (0, 0, 0), 2.1e-3, margin_m=1e-3).sum() > 16


def test_it_measures_iron_exactly_on_a_clean_image():
    c, rois = _image(level=2e-5)
    c_bg = c.copy()
    result = qf.quantify(c_bg, GRID, rois, injected_iron_ng=1000.0, pg_fe_per_cell=20.0)
    t = result.roi("target")
    expected = 1e-3 * rois[0].mask.sum() * NG_PER_MOL_L
    assert t.iron_mass_ng == pytest.approx(expected, rel=EXACT_REL)
    assert result.background_level_mol_per_l == pytest.approx(2e-5)
    assert t.cell_count == pytest.approx(expected * 1e3 / 20.0)
    assert result.retention_percent == pytest.approx(100 * expected / 1000.0)
    liver = result.roi("liver").iron_mass_ng
    assert result.off_target_percent == pytest.approx(100 * liver / (liver + expected))


def test_it_detects_against_k_sd_of_the_noise():
    c, rois = _image(noise=1e-5)
    result = qf.quantify(c, GRID, rois, k=5.0)
    assert all(r.detected for r in result.rois)
    assert result.voxel_threshold_mol_per_l == pytest.approx(
        result.background_level_mol_per_l + 5 * result.noise_sd_mol_per_l
    )
    faint = c.copy()
    faint[rois[0].mask] -= 1e-3 - 1e-7  # leave a trace far below the noise
    assert not qf.quantify(faint, GRID, rois).roi("target").detected


def test_it_propagates_noise_and_calibration_uncertainty():
    c, rois = _image(noise=1e-5)
    result = qf.quantify(c, GRID, rois, calibration_rel_uncertainty=0.1)
    t = result.roi("target")
    noise_ng = result.noise_sd_mol_per_l * np.sqrt(t.num_voxels) * NG_PER_MOL_L
    assert t.uncertainty_ng == pytest.approx(np.hypot(noise_ng, 0.1 * t.iron_mass_ng))
    assert t.detection_limit_ng == pytest.approx(5 * noise_ng)


def test_it_builds_rois_from_labels_and_records():
    labels = np.zeros((20, 20, 1), dtype=np.int32)
    labels[2:5, 3:6, 0] = 7
    rois = qf.rois_from_labels(labels, {7: ("tumour", "target")})
    assert rois[0].mask.sum() == 9
    assert rois[0].mask.reshape(GRID.size, order="F")[3, 4, 0]
    records = [
        {"name": "h", "kind": "target", "shape": "ellipsoid", "center_m": [0, 0, 0], "semi_axes_m": [3e-3, 2e-3, 1e-3]}
    ]
    assert qf.rois_from_records(records, GRID)[0].mask.sum() > 0


def test_it_rejects_an_image_of_the_wrong_size():
    _, rois = _image()
    with pytest.raises(ValueError, match=r"concentration has shape \(399,\), expected \(400,\) for grid \(20, 20, 1\)"):
        qf.quantify(np.zeros(399), GRID, rois)


def test_it_rejects_nan_and_bad_kinds():
    c, rois = _image()
    c[0] = np.nan
    with pytest.raises(ValueError, match="concentration contains NaN or inf"):
        qf.quantify(c, GRID, rois)
    with pytest.raises(ValueError, match="kind must be one of"):
        qf.rois_from_records(
            [{"name": "x", "kind": "brain", "shape": "sphere", "center_m": [0, 0, 0], "radius_m": 1e-3}], GRID
        )
