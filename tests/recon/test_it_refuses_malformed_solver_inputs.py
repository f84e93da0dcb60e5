"""Every solver entry point refuses malformed input with a specific message."""

import numpy as np
import pytest

from recon import solvers

A = np.arange(24, dtype=np.float64).reshape(6, 4) / 10.0 + 1.0
Y = np.ones(6)


def test_it_refuses_a_dtype_other_than_float32_or_float64():
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64, got int64"):
        solvers.stack_real(A + 0j, dtype="int64")
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64, got float16"):
        solvers.stack_real(A + 0j, dtype=np.float16)


def test_stack_real_refuses_a_matrix_that_is_not_2d():
    with pytest.raises(ValueError, match=r"system matrix must be \(rows, voxels\), got shape \(6,\)"):
        solvers.stack_real(np.ones(6, dtype=complex))


def test_stack_real_refuses_measurements_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"measurements have shape \(2, 5\), expected \(frames, 6\)"):
        solvers.stack_real(A + 0j, np.ones((2, 5), dtype=complex))
    with pytest.raises(ValueError, match=r"measurements have shape \(6,\), expected \(frames, 6\)"):
        solvers.stack_real(A + 0j, np.ones(6, dtype=complex))


def test_it_refuses_a_system_matrix_that_is_not_2d():
    with pytest.raises(ValueError, match=r"system matrix must be 2-D \(rows, voxels\), got shape \(6,\)"):
        solvers.cgnr(np.ones(6), Y, 0.1)


def test_it_refuses_an_empty_system_matrix():
    with pytest.raises(ValueError, match=r"system matrix is empty: shape \(6, 0\)"):
        solvers.cgnr(np.ones((6, 0)), Y, 0.1)


def test_it_refuses_nan_or_inf_in_the_system_matrix():
    a = A.copy()
    a[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"system matrix \(6, 4\) contains NaN or inf"):
        solvers.fista(a, Y, 0.1, grid_shape=(4, 1, 1))


def test_kaczmarz_refuses_a_complex_or_1d_matrix():
    with pytest.raises(ValueError, match=r"Kaczmarz needs a real 2-D float32/float64 matrix, got complex128 \(6, 4\)"):
        solvers.Kaczmarz(A + 0j, 0.1)
    with pytest.raises(ValueError, match=r"got float64 \(6,\)"):
        solvers.Kaczmarz(np.ones(6), 0.1)


def test_kaczmarz_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'primal' or 'dual', got 'sideways'"):
        solvers.Kaczmarz(A, 0.1, mode="sideways")


@pytest.mark.parametrize("iterations", [0, -1, 2.5])
def test_kaczmarz_and_cgnr_refuse_a_bad_iteration_count(iterations):
    with pytest.raises(ValueError, match=rf"iterations must be an integer >= 1, got {iterations!r}"):
        solvers.Kaczmarz(A, 0.1).solve(Y, iterations=iterations)
    with pytest.raises(ValueError, match=rf"iterations must be an integer >= 1, got {iterations!r}"):
        solvers.cgnr(A, Y, 0.1, iterations=iterations)


def test_fista_refuses_an_unknown_penalty():
    with pytest.raises(ValueError, match=r"penalty must be 'tv' or 'l1', got 'l2'"):
        solvers.fista(A, Y, 0.1, grid_shape=(4, 1, 1), penalty="l2")


@pytest.mark.parametrize("weight", [-1e-3, float("nan"), float("inf")])
def test_fista_refuses_a_bad_weight(weight):
    with pytest.raises(ValueError, match=r"weight must be >= 0, got"):
        solvers.fista(A, Y, 0.1, grid_shape=(4, 1, 1), weight=weight)
