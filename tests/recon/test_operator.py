"""The reconstruction operator: equal to the dense Tikhonov solution, cached under the right key,
and its region functionals equal the region sums of the reconstructed images."""

import numpy as np
import pytest

from recon import solvers
from recon.operator import ReconOperator, cache_key
from recon.params import ReconParams

# float32 operator (float64 Gram and Cholesky) against the float64 dense solve, relative to max |x|.
DENSE_TOL_F32 = 2e-4
DENSE_TOL_F64 = 1e-8
# region functionals (float32) against W @ x, relative to max |W x|.
FUNCTIONAL_TOL = 1e-4


def _smooth_rows(rows, grid, seed=0):
    """Smooth, ill-conditioned rows like MPI system-matrix rows, and a non-negative two-blob image."""
    rng = np.random.default_rng(seed)
    coords = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in grid], indexing="ij"), -1).reshape(-1, 3, order="F")
    freqs = rng.uniform(0, 4, size=(rows, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(rows, 1))
    a = np.cos(2 * np.pi * coords @ freqs.T + phase.T).T * rng.uniform(0.5, 1.5, (rows, 1))
    x = np.exp(-np.sum((coords - [0.3, 0.6, 0.5]) ** 2, axis=1) / 0.02)
    x += 0.5 * np.exp(-np.sum((coords - [0.7, 0.3, 0.5]) ** 2, axis=1) / 0.01)
    return a, x


def _dense_tikhonov(a64, lam, y64):
    """The six-line reference: x = Aᵀ(AAᵀ + λI)⁻¹y in float64 (numpy.linalg.solve)."""
    g = a64 @ a64.T + lam * np.eye(a64.shape[0])
    return np.linalg.solve(g, y64.T).T @ a64


# (real rows R, grid): fewer rows than voxels (row-space Gram) and more (voxel-space normal matrix).
SHAPES = [(120, (8, 8, 3)), (300, (12, 10, 1))]


@pytest.mark.parametrize("rows, grid", SHAPES)
def test_it_equals_the_dense_tikhonov_solution(rows, grid):
    a, x_true = _smooth_rows(rows, grid)
    rng = np.random.default_rng(1)
    clean = a @ x_true
    y = clean[None, :] + 0.01 * np.abs(clean).max() * rng.standard_normal((5, rows))
    lam = solvers.absolute_lambda(a, 1e-3)
    dense = _dense_tikhonov(a, lam, y)
    op = ReconOperator.build(a.astype(np.float32), lam)
    assert op.form == ("row_space" if rows <= x_true.size else "voxel_space")
    x = op.apply(y.astype(np.float32))
    assert x.dtype == np.float32 and x.shape == dense.shape
    err = np.abs(x - dense).max() / np.abs(dense).max()
    assert err < DENSE_TOL_F32, err
    x64 = ReconOperator.build(a, lam).apply(y)
    assert np.abs(x64 - dense).max() / np.abs(dense).max() < DENSE_TOL_F64


def test_it_builds_in_place_without_a_second_matrix():
    a, x_true = _smooth_rows(120, (8, 8, 3))
    a32 = np.ascontiguousarray(a, dtype=np.float32)
    lam = solvers.absolute_lambda(a32, 1e-3)
    expected = ReconOperator.build(a32.copy(), lam).matrix
    op = ReconOperator.build(a32, lam, overwrite_a=True)
    assert np.shares_memory(op.matrix, a32)
    np.testing.assert_array_equal(op.matrix, expected)


def test_its_region_functionals_equal_the_region_sums_of_the_image():
    a, x_true = _smooth_rows(120, (8, 8, 3), seed=3)
    p = x_true.size
    y = (a @ x_true)[None, :] * np.array([[1.0], [0.5], [2.0]])
    op = ReconOperator.build(a.astype(np.float32), solvers.absolute_lambda(a, 1e-3))
    masks = np.zeros((3, p))
    masks[0, : p // 3] = 1
    masks[1, p // 3 : 2 * p // 3] = 1
    masks[2] = np.linspace(0, 1, p)  # any linear estimator, not only masks
    scale = 0.05
    regions = op.region_functionals(masks, scale=scale).apply(y)
    expected = scale * op.apply(y).astype(np.float64) @ masks.T
    assert regions.shape == (3, 3)
    assert np.abs(regions - expected).max() / np.abs(expected).max() < FUNCTIONAL_TOL
    assert regions[1, 0] == pytest.approx(0.5 * regions[0, 0], rel=1e-5)  # linear in the frame


def test_it_refuses_weights_of_the_wrong_size():
    a, _ = _smooth_rows(40, (4, 4, 2))
    op = ReconOperator.build(a, 1e-2)
    with pytest.raises(ValueError, match=r"expected \(n_regions, 32\)"):
        op.region_functionals(np.ones((2, 31)))


def _key(**changes):
    base = {
        "system_matrix_sha256": "a" * 64,
        "lambda_abs": 0.5,
        "params": ReconParams().as_dict(),
        "channel": np.array([0, 0, 1]),
        "frequency": np.array([3, 7, 3]),
        "row_weights": np.ones(3),
    }
    base.update(changes)
    return cache_key(**base)


def test_its_cache_key_changes_with_the_file_lambda_rows_and_weights_only():
    base = _key()
    assert _key() == base
    assert _key(system_matrix_sha256="b" * 64) != base
    assert _key(lambda_abs=0.5000001) != base
    assert _key(params=ReconParams(lambda_=2e-3).as_dict()) != base
    assert _key(params=ReconParams(weighting="whiten").as_dict()) != base
    assert _key(frequency=np.array([3, 8, 3])) != base
    assert _key(row_weights=np.array([1.0, 1.0, 2.0])) != base
    # scan-side choices share the operator
    assert _key(params=ReconParams(frames=(2, 9), average=4, background="mean").as_dict()) == base


def test_it_saves_and_loads_from_the_cache(tmp_path):
    a, _ = _smooth_rows(40, (4, 4, 2))
    key = _key()
    assert ReconOperator.load(tmp_path, key) is None  # miss
    op = ReconOperator.build(a.astype(np.float32), 0.1)
    path = op.save(tmp_path, key)
    assert path.exists()
    hit = ReconOperator.load(tmp_path, key)
    assert hit is not None and hit.key == key and hit.form == op.form and hit.lambda_abs == 0.1
    np.testing.assert_array_equal(hit.matrix, op.matrix)
    assert ReconOperator.load(tmp_path, _key(lambda_abs=0.2)) is None  # another λ misses
    (tmp_path / f"{key}.npy").write_bytes(b"truncated")
    assert ReconOperator.load(tmp_path, key) is None  # a damaged entry is a miss, rebuilt by the caller


def test_it_refuses_a_zero_lambda_and_bad_frames():
    a, _ = _smooth_rows(40, (4, 4, 2))
    with pytest.raises(ValueError, match="lambda_abs must be a finite number > 0"):
        ReconOperator.build(a, 0.0)
    op = ReconOperator.build(a, 0.1)
    with pytest.raises(ValueError, match=r"expected \(F, 40\)"):
        op.apply(np.ones((2, 39)))
