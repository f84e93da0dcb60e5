"""Quantification refuses malformed grids, ROIs and images with a specific ValueError,
before any fit is attempted (the message names what is wrong)."""

import re

import numpy as np
import pytest

from recon import quantify as qf

GRID = qf.Grid((8, 8, 1), (8e-3, 8e-3, 1e-3))
P = GRID.num_voxels


def _target():
    return qf.Roi("target", "target", qf.mask_from_geometry(GRID, "sphere", (0, 0, 0), 2e-3))


def _image():
    c = np.zeros(P)
    c[_target().mask] = 1e-3
    return c


@pytest.mark.parametrize(
    "size, fov, message",
    [
        ((8, 8), (8e-3, 8e-3, 1e-3), "size needs 3 positive entries, got (8, 8)"),
        ((8, 0, 1), (8e-3, 8e-3, 1e-3), "size needs 3 positive entries, got (8, 0, 1)"),
        ((8, 8, 1), (8e-3, 0.0, 1e-3), "fov_m needs 3 positive entries (m), got (0.008, 0.0, 0.001)"),
    ],
)
def test_it_refuses_a_grid_without_three_positive_sizes(size, fov, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        qf.Grid(size, fov)


def test_it_refuses_a_geometric_mask_of_no_size_or_a_negative_margin():
    with pytest.raises(ValueError, match=re.escape("ROI size must be > 0 m, got 0.0")):
        qf.mask_from_geometry(GRID, "sphere", (0, 0, 0), 0.0)
    with pytest.raises(ValueError, match=re.escape("margin_m must be >= 0, got -0.001")):
        qf.mask_from_geometry(GRID, "sphere", (0, 0, 0), 1e-3, margin_m=-1e-3)


def test_it_builds_rois_from_a_label_volume_and_refuses_bad_labels():
    labels = np.zeros((8, 8, 1), dtype=np.int32)
    labels[1:3, 4, 0] = 2
    rois = qf.rois_from_labels(labels, {2: ("liver", "liver")})
    assert [(r.name, r.kind, int(r.mask.sum())) for r in rois] == [("liver", "liver", 2)]
    # Fortran flattening: voxel (ix=1, iy=4) is p = 1 + 8 * 4
    assert np.flatnonzero(rois[0].mask).tolist() == [33, 34]
    with pytest.raises(ValueError, match=re.escape("labels must be an integer array, got dtype float64")):
        qf.rois_from_labels(labels.astype(float), {2: ("liver", "liver")})
    with pytest.raises(ValueError, match=re.escape("got 'heart' for label 2")):
        qf.rois_from_labels(labels, {2: ("h", "heart")})


@pytest.mark.parametrize(
    "record, message",
    [
        ({"name": "t", "kind": "target", "shape": "sphere"}, "lacks 'center_m'"),
        (
            {"name": "t", "kind": "heart", "shape": "sphere", "center_m": [0, 0, 0], "radius_m": 1e-3},
            "ROI 't': kind must be one of",
        ),
        (
            {"name": "t", "kind": "target", "shape": "cone", "center_m": [0, 0, 0]},
            "ROI 't': shape must be sphere, ellipsoid or box, got 'cone'",
        ),
        (
            {"name": "t", "kind": "target", "shape": "box", "center_m": [0, 0, 0], "radius_m": 1e-3},
            "ROI 't' (box) needs 'half_size_m'",
        ),
    ],
)
def test_it_refuses_incomplete_roi_records(record, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        qf.rois_from_records([record], GRID)
    with pytest.raises(ValueError, match=re.escape(message)):
        qf.rois_for_quantification([record], GRID)


def test_it_refuses_voxel_fractions_of_no_size_or_no_samples():
    record = {"shape": "sphere", "center_m": [0, 0, 0], "radius_m": 2e-3}
    with pytest.raises(ValueError, match=re.escape("supersample must be >= 1, got 0")):
        qf.mask_fraction_from_record(GRID, record, supersample=0)
    with pytest.raises(ValueError, match=re.escape("ROI size must be > 0 m, got -0.002")):
        qf.mask_fraction_from_record(GRID, {**record, "radius_m": -2e-3})


@pytest.mark.parametrize("fwhm", [-1e-3, float("nan"), (1e-3, float("inf"), 0.0)])
def test_it_refuses_a_negative_or_non_finite_resolution(fwhm):
    with pytest.raises(ValueError, match="resolution FWHM must be >= 0 m per axis"):
        qf.gaussian_spread(_image(), GRID, fwhm)


def test_it_refuses_a_region_model_without_rois_or_with_an_unknown_background():
    with pytest.raises(ValueError, match=re.escape("no ROIs given")):
        qf.region_model(GRID, [])
    with pytest.raises(
        ValueError, match=re.escape("background must be one of ('constant', 'planar', 'none'), got 'quadratic'")
    ):
        qf.region_model(GRID, [_target()], background="quadratic")


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones(P - 1), f"ROI 'bad' mask has shape ({P - 1},), expected ({P},)"),
        (np.full(P, 1.5), "ROI 'bad' mask must hold voxel fractions in [0, 1]"),
        (np.full(P, np.nan), "ROI 'bad' mask must hold voxel fractions in [0, 1]"),
        (np.zeros(P), "ROI 'bad' covers no voxel of the grid (8, 8, 1)"),
    ],
)
def test_it_refuses_a_region_model_with_a_bad_mask(mask, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        qf.region_model(GRID, [_target(), qf.Roi("bad", "liver", mask)])


def test_it_refuses_spread_functions_or_background_columns_of_the_wrong_shape():
    rois = [_target()]
    # One row too many or too few: refused, never silently truncated nor an IndexError.
    with pytest.raises(ValueError, match=re.escape(f"spread has shape (2, {P}), expected finite (1, {P})")):
        qf.region_model(GRID, rois, spread=np.ones((2, P)))
    two = [_target(), qf.Roi("liver", "liver", qf.mask_from_geometry(GRID, "sphere", (3e-3, 3e-3, 0), 1e-3))]
    with pytest.raises(ValueError, match=re.escape(f"spread has shape (1, {P}), expected finite (2, {P})")):
        qf.region_model(GRID, two, spread=np.ones((1, P)))
    with pytest.raises(ValueError, match=re.escape(f"spread has shape (1, {P}), expected finite (1, {P})")):
        qf.region_model(GRID, rois, spread=np.full((1, P), np.inf))
    with pytest.raises(ValueError, match=re.escape(f"background_columns have shape ({P},), expected finite (B, {P})")):
        qf.region_model(GRID, rois, background_columns=np.ones(P))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"concentration_mol_per_l": np.zeros(P - 1)},
            f"concentration has shape ({P - 1},), expected ({P},) for grid (8, 8, 1)",
        ),
        ({"concentration_mol_per_l": np.full(P, np.nan)}, "concentration contains NaN or inf"),
        ({"rois": []}, "no ROIs given"),
        ({"k": 0.0}, "k must be > 0, got 0.0"),
        ({"injected_iron_ng": 0.0}, "injected_iron_ng must be > 0, got 0.0"),
        ({"pg_fe_per_cell": -1.0}, "pg_fe_per_cell must be > 0, got -1.0"),
        ({"frame_noise_factor": 0.5}, "frame_noise_factor must be >= 1, got 0.5"),
        ({"frame_noise_factor": float("inf")}, "frame_noise_factor must be >= 1, got inf"),
        ({"calibration_rel_uncertainty": -0.1}, "calibration_rel_uncertainty must be >= 0, got -0.1"),
        ({"rois": [qf.Roi("short", "target", np.ones(3, bool))]}, f"ROI 'short' mask has shape (3,), expected ({P},)"),
        ({"frames_mol_per_l": np.zeros(P)}, f"frames have shape ({P},), expected (Q, {P})"),
        ({"frames_mol_per_l": np.zeros((5, P - 1))}, f"frames have shape (5, {P - 1}), expected (Q, {P})"),
        ({"frames_mol_per_l": np.full((5, P), np.inf)}, "frames contain NaN or inf"),
    ],
)
def test_it_refuses_bad_quantification_arguments(kwargs, message):
    args = {"concentration_mol_per_l": _image(), "rois": [_target()]} | kwargs
    c, rois = args.pop("concentration_mol_per_l"), args.pop("rois")
    with pytest.raises(ValueError, match=re.escape(message)):
        qf.quantify(c, GRID, rois, fwhm_m=0.0, **args)
