"""Solvers on small synthetic problems with a known non-negative solution."""

import numpy as np
import pytest

from recon import solvers
from recon.operator import ReconOperator
from recon.params import ReconParams

# Relative image error after the stated iterations (noise-free data, small λ).
CONVERGENCE_TOL = {"kaczmarz": 0.05, "cgnr": 0.05, "fista": 0.08, "fast": 0.05}
ITERATIONS = {"kaczmarz": 30, "cgnr": 30, "fista": 200, "fast": 1}
CLOSED_FORM_TOL_F64 = 1e-6
CLOSED_FORM_TOL_F32 = 1e-3
PRIMAL_DUAL_TOL = {np.float64: 1e-9, np.float32: 1e-4}

# (rows R, grid): overdetermined (R > P) and underdetermined (R < P) problems.
SHAPES = [(300, (12, 10, 1)), (120, (8, 8, 3))]
# Well-posed problems (R = 3P, Gaussian rows) on a 2D and a 3D grid for convergence.
WELL_POSED = [(300, (10, 10, 1)), (450, (5, 5, 6))]


def _problem(rows, grid, dtype, seed=0, gaussian=False):
    """Smooth random rows (like MPI system-matrix rows; ill-conditioned) or
    Gaussian rows (well-conditioned), and a non-negative blob phantom."""
    rng = np.random.default_rng(seed)
    p = int(np.prod(grid))
    coords = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in grid], indexing="ij"), -1).reshape(-1, 3, order="F")
    freqs = rng.uniform(0, 4, size=(rows, 3))
    phase = rng.uniform(0, 2 * np.pi, size=(rows, 1))
    a = np.cos(2 * np.pi * coords @ freqs.T + phase.T).T * rng.uniform(0.5, 1.5, (rows, 1))
    if gaussian:
        a = rng.standard_normal((rows, p))
    x = np.exp(-np.sum((coords - [0.3, 0.6, 0.5]) ** 2, axis=1) / 0.02)
    x += 0.5 * np.exp(-np.sum((coords - [0.7, 0.3, 0.5]) ** 2, axis=1) / 0.01)
    return a.astype(dtype), x.astype(dtype), (a @ x).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, grid", WELL_POSED)
@pytest.mark.parametrize("solver", ["kaczmarz", "cgnr", "fista", "fast"])
def test_it_converges_to_the_known_image(solver, rows, grid, dtype):
    a, x_true, y = _problem(rows, grid, dtype, gaussian=True)
    lam = solvers.absolute_lambda(a, 1e-6)
    if solver == "kaczmarz":
        x = solvers.kaczmarz(a, y, lam, iterations=ITERATIONS[solver])
    elif solver == "cgnr":
        x = solvers.cgnr(a, y, lam, iterations=ITERATIONS[solver])
    elif solver == "fista":
        x = solvers.fista(a, y, lam, grid_shape=grid, penalty="tv", weight=1e-5, iterations=ITERATIONS[solver])
    else:
        x = ReconOperator.build(a, lam).apply(y)
    assert x.dtype == dtype and x.shape == x_true.shape
    err = np.linalg.norm(x - x_true) / np.linalg.norm(x_true)
    assert err < CONVERGENCE_TOL[solver]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("positivity", [True, False])
def test_it_gives_the_same_kaczmarz_iterates_in_row_space(dtype, positivity):
    a, _, y = _problem(120, (8, 8, 3), dtype)
    y = np.stack([y, 0.5 * y, y - y.mean()])
    lam = solvers.absolute_lambda(a, 1e-3)
    primal = solvers.Kaczmarz(a, lam, mode="primal").solve(y, 4, positivity)
    dual = solvers.Kaczmarz(a, lam, mode="dual").solve(y, 4, positivity)
    np.testing.assert_allclose(dual, primal, rtol=0, atol=PRIMAL_DUAL_TOL[dtype] * np.abs(primal).max())


@pytest.mark.parametrize("mode", ["primal", "dual"])
def test_it_never_returns_negative_values_with_positivity(mode):
    a, _, y = _problem(120, (8, 8, 3), np.float64)
    noisy = y + np.random.default_rng(1).normal(0, 0.3 * y.std(), (5, y.size))
    x = solvers.Kaczmarz(a, solvers.absolute_lambda(a, 1e-3), mode=mode).solve(noisy, 3, True)
    assert x.min() >= 0.0
    unconstrained = solvers.Kaczmarz(a, solvers.absolute_lambda(a, 1e-3), mode=mode).solve(noisy, 3, False)
    assert unconstrained.min() < 0.0  # the constraint did something


@pytest.mark.parametrize("rows, grid", SHAPES)
def test_it_matches_the_tikhonov_closed_form_on_the_fast_path(rows, grid):
    a, _, y = _problem(rows, grid, np.float64)
    lam = solvers.absolute_lambda(a, 1e-3)
    closed = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
    fast = ReconOperator.build(a, lam).apply(y)
    np.testing.assert_allclose(fast, closed, rtol=0, atol=CLOSED_FORM_TOL_F64 * np.abs(closed).max())
    fast32 = ReconOperator.build(a.astype(np.float32), lam).apply(y.astype(np.float32))
    np.testing.assert_allclose(fast32, closed, rtol=0, atol=CLOSED_FORM_TOL_F32 * np.abs(closed).max())


def test_it_normalises_lambda_by_the_system_matrix_energy():
    a = np.arange(12.0).reshape(3, 4)
    assert solvers.absolute_lambda(a, 0.1) == pytest.approx(0.1 * np.sum(a**2) / 4)


def test_it_stacks_real_and_imaginary_rows():
    s = np.array([[1 + 2j, 3 - 1j]])
    a, y = solvers.stack_real(s, np.array([[5 + 6j]]))
    np.testing.assert_array_equal(a, [[1, 3], [2, -1]])
    np.testing.assert_array_equal(y, [[5, 6]])


def test_it_solves_the_complex_problem_for_real_x():
    a, x_true, _ = _problem(80, (6, 6, 1), np.float64)
    s = a[:40] + 1j * a[40:]
    x, _ = solvers.solve(s, (s @ x_true)[None], ReconParams(solver="fast", lambda_=1e-9, dtype="float64"), (6, 6, 1))
    np.testing.assert_allclose(x[0], x_true, atol=1e-3 * x_true.max())


@pytest.mark.parametrize("lam", [-1.0, float("nan")])
def test_it_rejects_a_bad_lambda(lam):
    a, _, y = _problem(30, (4, 4, 1), np.float64)
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0"):
        solvers.kaczmarz(a, y, lam)
    with pytest.raises(ValueError, match="lambda_ must be a finite number >= 0"):
        ReconParams(lambda_=lam)


def test_it_names_the_shapes_when_they_do_not_match():
    a, _, _ = _problem(30, (4, 4, 1), np.float64)
    with pytest.raises(ValueError, match=r"measurement has shape \(29,\), expected \(frames, 30\) or \(30,\)"):
        solvers.cgnr(a, np.zeros(29), 1.0)


def test_it_rejects_nan_in_the_data():
    a, _, y = _problem(30, (4, 4, 1), np.float64)
    y[3] = np.nan
    with pytest.raises(ValueError, match=r"measurement \(30,\) contains NaN or inf"):
        solvers.kaczmarz(a, y, 1.0)


def test_it_rejects_a_grid_that_does_not_hold_the_voxels():
    a, _, y = _problem(30, (4, 4, 1), np.float64)
    with pytest.raises(ValueError, match=r"grid_shape \(5, 4, 1\) holds 20 voxels, system matrix has 16"):
        solvers.fista(a, y, 1.0, grid_shape=(5, 4, 1))
