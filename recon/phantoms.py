"""Analytic phantoms: iron in spheres, ellipsoids and boxes (scanner coordinates, m).

A phantom is a tuple of :class:`Inclusion` (each one an organ or a sample with
a known iron mass, uniformly distributed in its shape). :func:`rasterise`
samples it on a regular grid of sub-voxel centres; the iron of every
inclusion is renormalised on that grid, so the discretised phantom holds
exactly the nominal mass and the ground truth is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from recon.physics import IRON_MOLAR_MASS_G_PER_MOL, grid_centres_m

ROI_KINDS = ("target", "lungs", "liver", "spleen", "other")
SHAPES = ("sphere", "ellipsoid", "box")


@dataclass(frozen=True)
class Inclusion:
    """One region of uniform iron concentration.

    Parameters
    ----------
    name : str
    kind : {"target", "lungs", "liver", "spleen", "other"}
    shape : {"sphere", "ellipsoid", "box"}
    center_m : (3,) floats, scanner coordinates (m)
    size_m : (3,) floats
        Radius (sphere: all three equal), semi-axes (ellipsoid) or half sizes
        (box), in m.
    iron_ng : float
        Iron mass (ng Fe) in the region.
    """

    name: str
    kind: str
    shape: str
    center_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    iron_ng: float

    def __post_init__(self) -> None:
        if self.kind not in ROI_KINDS:
            raise ValueError(f"kind must be one of {ROI_KINDS}, got {self.kind!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if len(self.center_m) != 3 or len(self.size_m) != 3 or min(self.size_m) <= 0:
            raise ValueError(f"center_m and size_m need 3 entries, sizes > 0; got {self.center_m}, {self.size_m}")

    def contains(self, points_m: np.ndarray, slab_2d: bool = False) -> np.ndarray:
        """(N,) bool: which points lie inside. With ``slab_2d`` z is ignored
        (the shape's cross-section at its own centre plane is used)."""
        return shape_contains(self.shape, self.center_m, self.size_m, points_m, ignore_z=slab_2d)

    def as_roi(self) -> dict:
        """ROI record as written to the ROIs JSON file."""
        roi: dict[str, object] = {
            "name": self.name,
            "kind": self.kind,
            "shape": self.shape,
            "center_m": list(self.center_m),
        }
        if self.shape == "sphere":
            roi["radius_m"] = float(self.size_m[0])
        elif self.shape == "ellipsoid":
            roi["semi_axes_m"] = list(self.size_m)
        else:
            roi["half_size_m"] = list(self.size_m)
        return roi


def shape_contains(shape, center_m, size_m, points_m, ignore_z=False) -> np.ndarray:
    """(N,) bool membership of points (N, 3) in a sphere/ellipsoid/box."""
    d = (np.asarray(points_m, dtype=np.float64) - np.asarray(center_m, dtype=np.float64)) / np.asarray(
        size_m, dtype=np.float64
    )
    if ignore_z:
        d = d.copy()
        d[:, 2] = 0.0
    if shape in ("sphere", "ellipsoid"):
        return np.einsum("ij,ij->i", d, d) <= 1.0
    if shape == "box":
        return np.all(np.abs(d) <= 1.0, axis=1)
    raise ValueError(f"unknown shape {shape!r}")


def mouse(
    fov_m, dims: int = 2, target_iron_ng: float = 2000.0, lung_fraction: float = 0.15, liver_fraction: float = 0.6
) -> tuple[Inclusion, ...]:
    """Small-animal phantom: heart (target), two lungs and the liver.

    Amounts follow an intramyocardial injection a few hours on: most iron in
    the target (``target_iron_ng``, default 2 µg), less in each lung
    (``lung_fraction`` of it) and in the liver (``liver_fraction``). Layout is defined for a 24 mm field of view and scaled to
    ``fov_m`` (x and y; z too in 3D).
    """
    fov = np.asarray(fov_m, dtype=np.float64)
    sx, sy = fov[0] / 24e-3, fov[1] / 24e-3
    sz = fov[2] / 24e-3 if dims == 3 else 1.0
    mm = 1e-3

    def c(x, y):
        return (x * mm * sx, y * mm * sy, 0.0)

    def s(a, b, cz):
        return (a * mm * sx, b * mm * sy, cz * mm * sz)

    # Gaps between organs are ≥ 3 mm (about two voxels of a 15-voxel 3D grid),
    # so that spill-over between neighbours stays small at MPI resolution.
    return (
        Inclusion("heart", "target", "ellipsoid", c(0.0, 4.0), s(2.6, 2.6, 2.6), target_iron_ng),
        Inclusion("lung_left", "lungs", "ellipsoid", c(-8.2, 4.0), s(2.2, 3.8, 3.0), lung_fraction * target_iron_ng),
        Inclusion("lung_right", "lungs", "ellipsoid", c(8.2, 4.0), s(2.2, 3.8, 3.0), lung_fraction * target_iron_ng),
        Inclusion("liver", "liver", "ellipsoid", c(0.0, -6.5), s(6.5, 2.8, 3.5), liver_fraction * target_iron_ng),
    )


def points(fov_m, dims: int = 2, iron_ng: float = 500.0) -> tuple[Inclusion, ...]:
    """Three small spheres (≈ point sources) at distinct positions."""
    fov = np.asarray(fov_m, dtype=np.float64)
    r = 0.04 * float(fov[:2].min())
    z = 0.0
    return (
        Inclusion("p1", "target", "sphere", (-0.25 * fov[0], 0.2 * fov[1], z), (r, r, r), iron_ng),
        Inclusion("p2", "other", "sphere", (0.2 * fov[0], 0.25 * fov[1], z), (r, r, r), 0.5 * iron_ng),
        Inclusion("p3", "other", "sphere", (0.0, -0.25 * fov[1], z), (r, r, r), 0.25 * iron_ng),
    )


def spheres(fov_m, dims: int = 2, iron_ng: float = 1000.0) -> tuple[Inclusion, ...]:
    """Two spheres of different size and load."""
    fov = np.asarray(fov_m, dtype=np.float64)
    r1, r2 = 0.12 * fov[0], 0.08 * fov[0]
    return (
        Inclusion("large", "target", "sphere", (-0.2 * fov[0], 0.0, 0.0), (r1, r1, r1), iron_ng),
        Inclusion("small", "other", "sphere", (0.25 * fov[0], 0.1 * fov[1], 0.0), (r2, r2, r2), 0.3 * iron_ng),
    )


PHANTOMS: dict[str, Callable[..., tuple[Inclusion, ...]]] = {"mouse": mouse, "points": points, "spheres": spheres}


@dataclass(frozen=True)
class RasterisedPhantom:
    """A phantom sampled on sub-voxel centres.

    positions_m : (N, 3) sub-voxel centres holding iron (others dropped)
    iron_ng : (N,) iron per sub-voxel (ng)
    label : (N,) index into ``inclusions``
    """

    inclusions: tuple[Inclusion, ...]
    positions_m: np.ndarray
    iron_ng: np.ndarray
    label: np.ndarray

    @property
    def truth_ng(self) -> dict[str, float]:
        return {inc.name: float(self.iron_ng[self.label == i].sum()) for i, inc in enumerate(self.inclusions)}


def rasterise(
    inclusions: tuple[Inclusion, ...],
    size: tuple[int, int, int],
    fov_m,
    center_m,
    factor: int = 3,
    dims: int = 2,
) -> RasterisedPhantom:
    """Sample inclusions on a grid ``factor`` times finer per driven axis.

    Overlaps go to the first inclusion listed. Each inclusion's iron is spread
    uniformly over its sub-voxels so it sums exactly to ``iron_ng``.
    """
    fine_size = cast("tuple[int, int, int]", tuple(int(s) * (factor if a < dims else 1) for a, s in enumerate(size)))
    centres = grid_centres_m(fine_size, fov_m, center_m)
    label = np.full(centres.shape[0], -1, dtype=np.int64)
    for i, inc in enumerate(inclusions):
        inside = inc.contains(centres, slab_2d=dims < 3) & (label < 0)
        if not inside.any():
            raise ValueError(f"inclusion {inc.name!r} covers no sub-voxel of the {fine_size} grid")
        label[inside] = i
    keep = label >= 0
    label = label[keep]
    iron = np.zeros(label.shape[0])
    for i, inc in enumerate(inclusions):
        sel = label == i
        iron[sel] = inc.iron_ng / sel.sum()
    return RasterisedPhantom(tuple(inclusions), centres[keep], iron, label)


def iron_image_mol_per_l(phantom: RasterisedPhantom, size, fov_m, center_m) -> np.ndarray:
    """(P,) ground-truth mean iron concentration (mol Fe/L) per voxel, x fastest."""
    size = tuple(int(s) for s in size)
    fov = np.asarray(fov_m, dtype=np.float64)
    center = np.asarray(center_m, dtype=np.float64)
    idx = np.floor((phantom.positions_m - (center - fov / 2)) / (fov / np.asarray(size))).astype(np.int64)
    idx = np.clip(idx, 0, np.asarray(size) - 1)
    flat = idx[:, 0] + size[0] * (idx[:, 1] + size[1] * idx[:, 2])
    iron = np.bincount(flat, weights=phantom.iron_ng, minlength=int(np.prod(size)))
    voxel_l = float(np.prod(fov / np.asarray(size))) * 1e3
    return iron * 1e-9 / IRON_MOLAR_MASS_G_PER_MOL / voxel_l


def rois_json_records(inclusions: tuple[Inclusion, ...]) -> list[dict]:
    return [inc.as_roi() for inc in inclusions]
