"""recon.phantoms: inclusion refusals, ROI records and membership for every
shape, the point-source phantom, and an inclusion that misses the grid."""

import numpy as np
import pytest

from recon import phantoms
from recon.phantoms import Inclusion

FOV = (24e-3, 24e-3, 1e-3)


@pytest.mark.parametrize(
    "kind, shape, center, size, message",
    [
        ("kidney", "sphere", (0, 0, 0), (1, 1, 1), r"kind must be one of \('target', .*\), got 'kidney'"),
        ("target", "cube", (0, 0, 0), (1, 1, 1), r"shape must be one of \('sphere', 'ellipsoid', 'box'\), got 'cube'"),
        ("target", "box", (0, 0), (1, 1, 1), r"center_m and size_m need 3 entries, sizes > 0"),
        ("target", "box", (0, 0, 0), (1, 0, 1), r"center_m and size_m need 3 entries, sizes > 0"),
    ],
)
def test_it_refuses_a_malformed_inclusion(kind, shape, center, size, message):
    with pytest.raises(ValueError, match=message):
        Inclusion("x", kind, shape, center, size, 1.0)


def test_each_shape_writes_its_own_size_field_and_contains_the_right_points():
    sphere = Inclusion("s", "target", "sphere", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 5.0)
    ellipsoid = Inclusion("e", "liver", "ellipsoid", (0.0, 0.0, 0.0), (2.0, 1.0, 1.0), 5.0)
    box = Inclusion("b", "other", "box", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 5.0)
    assert phantoms.rois_json_records((sphere, ellipsoid, box)) == [
        {"name": "s", "kind": "target", "shape": "sphere", "center_m": [0.0, 0.0, 0.0], "radius_m": 1.0},
        {
            "name": "e",
            "kind": "liver",
            "shape": "ellipsoid",
            "center_m": [0.0, 0.0, 0.0],
            "semi_axes_m": [2.0, 1.0, 1.0],
        },
        {"name": "b", "kind": "other", "shape": "box", "center_m": [0.0, 0.0, 0.0], "half_size_m": [1.0, 1.0, 1.0]},
    ]
    pts = np.array([[0.9, 0.9, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 5.0]])
    np.testing.assert_array_equal(sphere.contains(pts), [False, False, False])
    np.testing.assert_array_equal(ellipsoid.contains(pts), [False, True, False])
    np.testing.assert_array_equal(box.contains(pts), [True, False, False])
    # In a 2D slab z is ignored: the far point lies in the sphere's cross-section.
    np.testing.assert_array_equal(sphere.contains(pts, slab_2d=True), [False, False, True])


def test_it_refuses_an_unknown_shape_in_the_membership_test():
    with pytest.raises(ValueError, match="unknown shape 'torus'"):
        phantoms.shape_contains("torus", (0, 0, 0), (1, 1, 1), np.zeros((1, 3)))


def test_the_point_phantom_rasterises_to_its_stated_iron():
    incs = phantoms.PHANTOMS["points"](FOV, iron_ng=400.0)
    assert [i.name for i in incs] == ["p1", "p2", "p3"]
    raster = phantoms.rasterise(incs, (24, 24, 1), FOV, (0.0, 0.0, 0.0), factor=3)
    truth = raster.truth_ng
    assert truth == pytest.approx({"p1": 400.0, "p2": 200.0, "p3": 100.0}, rel=1e-12)
    # The three sources stay apart: each one's sub-voxels lie around its own centre.
    for i, inc in enumerate(incs):
        pos = raster.positions_m[raster.label == i]
        assert np.abs(pos[:, :2].mean(axis=0) - np.asarray(inc.center_m[:2])).max() < 0.5e-3


def test_it_refuses_an_inclusion_that_covers_no_sub_voxel():
    outside = Inclusion("far", "other", "sphere", (0.5, 0.5, 0.0), (1e-3, 1e-3, 1e-3), 1.0)
    with pytest.raises(ValueError, match=r"inclusion 'far' covers no sub-voxel of the \(12, 12, 1\) grid"):
        phantoms.rasterise((outside,), (4, 4, 1), FOV, (0.0, 0.0, 0.0), factor=3)
