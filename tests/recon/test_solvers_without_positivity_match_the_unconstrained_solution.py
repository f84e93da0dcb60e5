"""Paths of the solvers not covered by test_solvers.py: no positivity, L1
penalty, a grid with a singleton axis in the TV prox, and make_solver for
every solver name, each checked against an independent closed form."""

import numpy as np
import pytest

from recon import solvers
from recon.params import ReconParams

# Tikhonov closed form reached by 200 CG steps on a well-posed 40 x 12 problem.
CG_TOL = 1e-8
# Kaczmarz (dual, no positivity) after 200 sweeps on the same problem.
KACZ_TOL = 1e-4
# FISTA with weight 0 is plain accelerated gradient on the Tikhonov problem.
FISTA_TOL = 1e-4


def _problem(seed=1, rows=40, voxels=12):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, voxels))
    # A solution with negative entries, so positivity would change it.
    x = np.linspace(-1.0, 1.0, voxels)
    return a, x, a @ x


def _tikhonov(a, y, lam):
    return np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)


def test_cgnr_without_positivity_keeps_negative_values_and_matches_tikhonov():
    a, _, y = _problem()
    lam = 0.3
    x = solvers.cgnr(a, y, lam, iterations=200, positivity=False)
    ref = _tikhonov(a, y, lam)
    assert x.min() < -0.5
    np.testing.assert_allclose(x, ref, atol=CG_TOL)


def test_kaczmarz_dual_without_positivity_matches_tikhonov():
    a, _, y = _problem(rows=10, voxels=12)  # rows <= voxels: the dual mode
    lam = 0.5
    k = solvers.Kaczmarz(a, lam)
    assert k.mode == "dual"
    x = k.solve(np.stack([y, 2 * y]), iterations=300, positivity=False)
    ref = _tikhonov(a, y, lam)
    np.testing.assert_allclose(x[0], ref, atol=KACZ_TOL)
    np.testing.assert_allclose(x[1], 2 * ref, atol=2 * KACZ_TOL)


def test_fista_with_zero_weight_converges_to_tikhonov_for_both_penalties():
    a, _, y = _problem()
    lam = 0.3
    ref = _tikhonov(a, y, lam)
    for penalty in ("l1", "tv"):
        x = solvers.fista(
            a, y, lam, grid_shape=(4, 3, 1), penalty=penalty, weight=0.0, iterations=400, positivity=False
        )
        np.testing.assert_allclose(x, ref, atol=FISTA_TOL, err_msg=penalty)


def test_fista_l1_with_positivity_never_goes_negative_and_shrinks_small_values():
    a, _, y = _problem()
    x_pos = solvers.fista(a, y, 0.0, grid_shape=(12, 1, 1), penalty="l1", weight=0.05, iterations=300)
    x_free = solvers.fista(
        a, y, 0.0, grid_shape=(12, 1, 1), penalty="l1", weight=0.05, iterations=300, positivity=False
    )
    assert x_pos.min() >= 0.0
    assert x_free.min() < -0.5
    # L1 soft-thresholds: the strongest L1 result has a smaller ℓ1 norm than least squares.
    assert np.abs(x_free).sum() < np.abs(np.linalg.lstsq(a, y, rcond=None)[0]).sum()


def test_the_tv_prox_leaves_a_singleton_axis_alone():
    # Constant along the singleton axis 1 (length 1): TV there is zero, so the
    # prox equals the prox along axis 2 alone.
    rng = np.random.default_rng(0)
    b = rng.standard_normal((2, 1, 7))
    tau = np.array([0.1, 0.2])
    both, _ = solvers.prox_tv(b, tau, (1, 2), iterations=200, positivity=False)
    one, _ = solvers.prox_tv(b, tau, (2,), iterations=200, positivity=False)
    np.testing.assert_allclose(both, one, atol=1e-3)
    # A TV prox keeps the mean of each frame (the divergence sums to zero).
    np.testing.assert_allclose(one.mean(axis=(1, 2)), b.mean(axis=(1, 2)), atol=1e-12)


def test_the_spectral_norm_of_a_zero_matrix_is_zero():
    assert solvers.spectral_norm_squared(np.zeros((5, 4))) == 0.0
    a, _, _ = _problem()
    assert solvers.spectral_norm_squared(a, iterations=200) == pytest.approx(np.linalg.norm(a, 2) ** 2, rel=1e-6)


@pytest.mark.parametrize("solver", ["kaczmarz", "cgnr", "fista", "fast"])
def test_make_solver_runs_each_named_solver(solver):
    a, _, y = _problem()
    lam = 0.3
    params = ReconParams(solver=solver, iterations=300, positivity=False, fista_weight=0.0, dtype="float64")
    x = solvers.make_solver(a, lam, params, (4, 3, 1))(y[None])
    np.testing.assert_allclose(x[0], _tikhonov(a, y, lam), atol=1e-3)


@pytest.mark.parametrize("positivity", [True, False])
def test_kaczmarz_row_space_blocks_give_the_row_action_iterates_beyond_one_block(positivity):
    # 300 rows > the 128-row block of the dual (row-space) mode, so later blocks
    # see earlier ones through the Gram product; the iterates must still equal
    # the sequential row-action (primal) ones.
    rng = np.random.default_rng(4)
    a = rng.standard_normal((300, 360))
    y = rng.standard_normal((3, 300))
    dual = solvers.Kaczmarz(a, 0.2, mode="dual")
    assert dual.row_block < a.shape[0]
    x_dual = dual.solve(y, iterations=4, positivity=positivity)
    x_primal = solvers.Kaczmarz(a, 0.2, mode="primal").solve(y, iterations=4, positivity=positivity)
    np.testing.assert_allclose(x_dual, x_primal, rtol=0, atol=1e-9 * np.abs(x_primal).max())
