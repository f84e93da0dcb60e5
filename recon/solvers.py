"""Regularised least-squares solvers for S x ≈ u with x real (and ≥ 0).

The concentration is real, so every complex row s_j of the system matrix is
split into a real and an imaginary row: A = [Re S; Im S] (2M × P) and
y = [Re u; Im u]. Minimising ‖Ax − y‖² over real x is exactly the complex
least-squares problem restricted to real x (MPIReco instead runs complex
Kaczmarz and takes the real part after every sweep; the stacked form is the
same problem solved without that detour).

Tikhonov weight: all solvers minimise ½‖Ax − y‖² + ½λ_abs‖x‖² with
``λ_abs = lambda_ · trace(AᵀA) / P`` (:func:`absolute_lambda`,
MPIReco's system-matrix-based normalisation: trace(SᴴS) = ‖S‖_F² = trace(AᵀA)).

Solvers (all take several frames at once: y is (F, 2M), x is (F, P)):

- :class:`Kaczmarz`: MPIReco's regularised Kaczmarz; row-action form
  (``mode="primal"``) or the identical iterates computed in row space with the
  Gram matrix (``mode="dual"``, much faster when rows < voxels).
- :func:`cgnr`: conjugate gradients on (AᵀA + λI)x = Aᵀy.
- :func:`fista`: FISTA with TV (isotropic, on the grid) or L1, and positivity.
- the fast path, :class:`recon.operator.ReconOperator`: the explicit Tikhonov
  operator, applied to a batch of frames as one matrix product
  (:func:`fast_solver`). It is the Tikhonov solution *without* positivity
  (clamped afterwards when asked).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from recon import _kernels
from recon.operator import ReconOperator

_DTYPES = {"float32": np.float32, "float64": np.float64}


def _dtype(dtype) -> np.dtype:
    dt = np.dtype(_DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_lambda(lambda_abs: float) -> float:
    if not (isinstance(lambda_abs, (int, float, np.floating)) and math.isfinite(lambda_abs)) or lambda_abs < 0:
        raise ValueError(f"lambda must be a finite number >= 0, got {lambda_abs!r}")
    return float(lambda_abs)


def _check_problem(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate A (R, P) and y (F, R) or (R,); returns y as 2-D and whether it was 1-D."""
    if a.ndim != 2:
        raise ValueError(f"system matrix must be 2-D (rows, voxels), got shape {a.shape}")
    single = y.ndim == 1
    y2 = y[None, :] if single else y
    if y2.ndim != 2 or y2.shape[1] != a.shape[0]:
        raise ValueError(
            f"measurement has shape {y.shape}, expected (frames, {a.shape[0]}) or ({a.shape[0]},) "
            f"to match the system matrix {a.shape}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"system matrix is empty: shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"system matrix {a.shape} contains NaN or inf")
    if not np.all(np.isfinite(y2)):
        raise ValueError(f"measurement {y.shape} contains NaN or inf")
    return a, y2, single


def stack_real(system_matrix: np.ndarray, measurements: np.ndarray | None = None, dtype="float64"):
    """A = [Re S; Im S] (2M, P) and y = [Re u, Im u] (F, 2M) in ``dtype``.

    system_matrix : (M, P) complex; measurements : (F, M) complex or None.
    """
    dt = _dtype(dtype)
    s = np.asarray(system_matrix)
    if s.ndim != 2:
        raise ValueError(f"system matrix must be (rows, voxels), got shape {s.shape}")
    a = np.empty((2 * s.shape[0], s.shape[1]), dtype=dt)
    a[: s.shape[0]] = s.real
    a[s.shape[0] :] = s.imag
    if measurements is None:
        return a
    u = np.asarray(measurements)
    if u.ndim != 2 or u.shape[1] != s.shape[0]:
        raise ValueError(f"measurements have shape {u.shape}, expected (frames, {s.shape[0]})")
    y = np.concatenate([u.real, u.imag], axis=1).astype(dt)
    return a, y


def system_matrix_energy(a: np.ndarray) -> float:
    """trace(AᵀA) = ‖A‖_F² (float64 accumulation, in blocks to bound memory)."""
    total = 0.0
    for start in range(0, a.shape[0], 128):
        blk = np.asarray(a[start : start + 128], dtype=np.float64)
        total += float(np.einsum("ij,ij->", blk, blk))
    return total


def absolute_lambda(a: np.ndarray, lambda_rel: float) -> float:
    """λ_abs = lambda_rel · trace(AᵀA) / P (mean squared column norm)."""
    lambda_rel = _check_lambda(lambda_rel)
    return lambda_rel * system_matrix_energy(a) / a.shape[1]


def gram_matrix(a: np.ndarray, block: int = 256) -> np.ndarray:
    """G = AAᵀ (R, R) in A's dtype, accumulated in place over column blocks.

    BLAS syrk adds each block's product straight into G (no R × R temporary,
    no transposed copy of A), then the upper triangle is mirrored block by
    block, so the peak is A + G + one R × 512 slab. G is returned as the
    C-contiguous transpose of the Fortran-ordered result (same values: G is
    symmetric).
    """
    r, p = a.shape
    syrk = scipy.linalg.blas.ssyrk if a.dtype == np.float32 else scipy.linalg.blas.dsyrk
    g = np.zeros((r, r), dtype=a.dtype, order="F")
    for start in range(0, p, block):
        blk_t = a[:, start : start + block].T  # (b, R), F-contiguous when A is C-contiguous
        g = syrk(1.0, blk_t, beta=1.0, c=g, trans=1, lower=0, overwrite_c=1)
    for i0 in range(0, r, 512):
        i1 = min(i0 + 512, r)
        d = g[i0:i1, i0:i1]
        g[i0:i1, i0:i1] = np.triu(d) + np.triu(d, 1).T
        g[i1:, i0:i1] = g[i0:i1, i1:].T
    return g.T


class Kaczmarz:
    """Regularised Kaczmarz (MPIReco / RegularizedLeastSquares.jl).

    Solves min ‖Ax − y‖² + λ‖x‖² via the extended system [A √λI][x; v] = y;
    one sweep visits every row in order; positivity is projected after each
    sweep. Frames are independent and processed as a block.

    Parameters
    ----------
    a : (R, P) float32/float64 real rows (see :func:`stack_real`)
    lambda_abs : float ≥ 0, absolute Tikhonov weight
    mode : {"auto", "primal", "dual"}
        ``"primal"``: row action on x (O(P) per row and frame).
        ``"dual"``: the same iterates in row space: each sweep is Gauss–Seidel
        on (AAᵀ + λI) with the precomputed Gram matrix (O(R) per row and frame)
        plus two BLAS products to move between x and the residual.
        ``"auto"`` picks dual when R ≤ P.
    frame_block : int
        Frames solved together (bounds the (F, P) work arrays).
    """

    def __init__(self, a: np.ndarray, lambda_abs: float, *, mode: str = "auto", frame_block: int = 256):
        if a.ndim != 2 or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"Kaczmarz needs a real 2-D float32/float64 matrix, got {a.dtype} {a.shape}")
        if mode not in ("auto", "primal", "dual"):
            raise ValueError(f"mode must be 'auto', 'primal' or 'dual', got {mode!r}")
        self.a = np.ascontiguousarray(a)
        self.lambda_abs = _check_lambda(lambda_abs)
        self.mode = ("dual" if a.shape[0] <= a.shape[1] else "primal") if mode == "auto" else mode
        self.frame_block = int(frame_block)
        self.row_block = 128
        self.row_energy = np.einsum("ij,ij->i", self.a, self.a, dtype=np.float64).astype(a.dtype)
        self.gram = gram_matrix(self.a) if self.mode == "dual" else None

    def solve(self, y: np.ndarray, iterations: int = 3, positivity: bool = True) -> np.ndarray:
        """x (F, P) for y (F, R) (or (P,) for (R,))."""
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
        a, y2, single = _check_problem(self.a, np.asarray(y))
        y2 = np.ascontiguousarray(y2, dtype=a.dtype)
        out = np.empty((y2.shape[0], a.shape[1]), dtype=a.dtype)
        for start in range(0, y2.shape[0], self.frame_block):
            blk = y2[start : start + self.frame_block]
            if self.mode == "primal":
                x = np.zeros((blk.shape[0], a.shape[1]), dtype=a.dtype)
                v = np.zeros_like(blk)
                _kernels.kaczmarz_primal_kernel(
                    a, self.row_energy, blk, self.lambda_abs, int(iterations), bool(positivity), x, v
                )
            else:
                x = self._solve_dual(blk, int(iterations), bool(positivity))
            out[start : start + blk.shape[0]] = x
        return out[0] if single else out

    def _solve_dual(self, y: np.ndarray, iterations: int, positivity: bool) -> np.ndarray:
        a, g = self.a, self.gram
        v = np.zeros_like(y)
        w = np.empty_like(y)
        q = np.empty_like(y)
        x = None
        w_total = np.zeros_like(y) if not positivity else None
        residual0 = y.copy()
        if g is None:
            raise ValueError("the dual solver needs the Gram matrix")
        n_rows = g.shape[0]
        for sweep in range(iterations):
            # Block Gauss–Seidel: sequential rows inside a block (numba), the
            # block's effect on all later rows as one BLAS product. Same
            # iterates as row-by-row Kaczmarz, up to rounding.
            q[:] = 0
            for start in range(0, n_rows, self.row_block):
                stop = min(start + self.row_block, n_rows)
                _kernels.kaczmarz_dual_block_kernel(g, residual0, self.lambda_abs, v, w, q, start, stop)
                if stop < n_rows:
                    q[:, stop:] += w[:, start:stop] @ g[start:stop, stop:]
            if positivity:
                # Project after the sweep (MPIReco): form x, clamp, and get the
                # residual of the clamped x for the next sweep.
                x = w @ a if x is None else x + w @ a
                _kernels.clamp_negative_kernel(x)
                if sweep + 1 < iterations:
                    residual0 = y - x @ a.T
            else:
                # Without projection x stays in the row space: x = Aᵀ w_total,
                # so the residual only needs the small Gram product.
                w_total += w
                if sweep + 1 < iterations:
                    residual0 = y - w_total @ g
        if w_total is not None:  # without positivity
            x = w_total @ a
        if x is None:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        return x


def kaczmarz(a, y, lambda_abs, iterations=3, positivity=True, mode="auto"):
    """Functional form of :class:`Kaczmarz` (one-off problems)."""
    return Kaczmarz(np.asarray(a), lambda_abs, mode=mode).solve(y, iterations, positivity)


def cgnr(a: np.ndarray, y: np.ndarray, lambda_abs: float, iterations: int = 20, positivity: bool = True) -> np.ndarray:
    """Conjugate gradients on the normal equations (AᵀA + λI)x = Aᵀy.

    All frames run together (one BLAS product per step), each with its own
    step sizes. Positivity cannot be enforced inside CG: negative values are
    clamped once at the end.

    a : (R, P) real; y : (F, R) or (R,). Returns x of shape (F, P) or (P,).
    """
    lam = _check_lambda(lambda_abs)
    a, y2, single = _check_problem(np.asarray(a), np.asarray(y))
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    y2 = y2.astype(a.dtype, copy=False)
    b = y2 @ a  # (F, P) = (Aᵀy)ᵀ
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = np.einsum("fp,fp->f", r, r, dtype=np.float64)
    tiny = np.finfo(a.dtype).tiny
    for _ in range(int(iterations)):
        q = (p @ a.T) @ a + lam * p
        denom = np.einsum("fp,fp->f", p, q, dtype=np.float64)
        alpha = np.where(denom > tiny, rs / np.maximum(denom, tiny), 0.0).astype(a.dtype)
        x += alpha[:, None] * p
        r -= alpha[:, None] * q
        rs_new = np.einsum("fp,fp->f", r, r, dtype=np.float64)
        beta = np.where(rs > tiny, rs_new / np.maximum(rs, tiny), 0.0).astype(a.dtype)
        p = r + beta[:, None] * p
        rs = rs_new
    if positivity:
        np.maximum(x, 0, out=x)
    return x[0] if single else x


def _grad(u: np.ndarray, axes: tuple[int, ...]) -> list[np.ndarray]:
    """Forward differences with Neumann boundary along each axis in ``axes``."""
    out = []
    for ax in axes:
        d = np.zeros_like(u)
        sl_hi = [slice(None)] * u.ndim
        sl_lo = [slice(None)] * u.ndim
        sl_hi[ax] = slice(1, None)
        sl_lo[ax] = slice(None, -1)
        d[tuple(sl_lo)] = u[tuple(sl_hi)] - u[tuple(sl_lo)]
        out.append(d)
    return out


def _div(p: list[np.ndarray], axes: tuple[int, ...]) -> np.ndarray:
    """Discrete divergence, the negative adjoint of :func:`_grad`."""
    out = np.zeros_like(p[0])
    for comp, ax in zip(p, axes, strict=True):
        n = comp.shape[ax]
        d = np.zeros_like(comp)
        first: list[slice | int] = [slice(None)] * comp.ndim
        first[ax] = 0
        d[tuple(first)] = comp[tuple(first)]
        if n > 1:
            mid = [slice(None)] * comp.ndim
            prev = [slice(None)] * comp.ndim
            mid[ax] = slice(1, n - 1)
            prev[ax] = slice(0, n - 2)
            d[tuple(mid)] = comp[tuple(mid)] - comp[tuple(prev)]
            last = [slice(None)] * comp.ndim
            last_prev = [slice(None)] * comp.ndim
            last[ax] = n - 1
            last_prev[ax] = n - 2
            d[tuple(last)] = -comp[tuple(last_prev)]
        out += d
    return out


def prox_tv(
    b: np.ndarray,
    tau: np.ndarray,
    axes: tuple[int, ...],
    iterations: int = 10,
    positivity: bool = True,
    dual: list[np.ndarray] | None = None,
):
    """argmin_x ½‖x − b‖² + τ TV(x) (+ x ≥ 0), isotropic TV, by projected
    gradient on the dual (Chambolle; Beck & Teboulle 2009, constrained form).

    b : (F, *grid) with the frame axis first; tau : (F,) per-frame weight;
    axes : grid axes of b with more than one voxel. ``dual`` warm-starts the
    dual field (returned too). Step 1/(4·len(axes)·τ) is safe because
    ‖∇‖² ≤ 4·ndim for forward differences.
    """
    t = tau.reshape((-1,) + (1,) * (b.ndim - 1)).astype(b.dtype)
    p = [np.zeros_like(b) for _ in axes] if dual is None else dual
    step = 1.0 / (4.0 * len(axes))
    safe_t = np.where(t > 0, t, 1).astype(b.dtype)
    for _ in range(int(iterations)):
        x = b + t * _div(p, axes)
        if positivity:
            np.maximum(x, 0, out=x)
        g = _grad(x, axes)
        p = [pi + (step / safe_t) * gi for pi, gi in zip(p, g, strict=True)]
        norm = np.sqrt(sum(pi * pi for pi in p))
        np.maximum(norm, 1.0, out=norm)
        p = [pi / norm for pi in p]
    x = b + t * _div(p, axes)
    if positivity:
        np.maximum(x, 0, out=x)
    return x, p


def spectral_norm_squared(a: np.ndarray, iterations: int = 30, seed: int = 0) -> float:
    """‖A‖₂² by power iteration on AᵀA (deterministic start)."""
    x = np.random.default_rng(seed).standard_normal(int(a.shape[1])).astype(a.dtype)
    x /= np.linalg.norm(x)
    val = 0.0
    for _ in range(iterations):
        z = a.T @ (a @ x)
        val = float(np.linalg.norm(z))
        if val == 0.0:
            return 0.0
        x = z / val
    return val


def fista(
    a: np.ndarray,
    y: np.ndarray,
    lambda_abs: float,
    *,
    grid_shape: tuple[int, int, int],
    penalty: str = "tv",
    weight: float = 1e-3,
    iterations: int = 50,
    positivity: bool = True,
    inner_iterations: int = 10,
) -> np.ndarray:
    """FISTA for ½‖Ax − y‖² + ½λ‖x‖² + τ·R(x) (+ x ≥ 0), R = TV or L1.

    τ = ``weight`` · ‖Aᵀy‖_∞ per frame (the L1 solution vanishes above
    ‖Aᵀy‖_∞, so the weight is scale-free). Step 1/L with L = ‖A‖₂² + λ
    (power iteration). The TV prox is :func:`prox_tv`, warm-started.

    a : (R, P) real; y : (F, R) or (R,); grid_shape : (nx, ny, nz) with
    nx·ny·nz = P (voxels x fastest). Returns (F, P) or (P,).
    """
    lam = _check_lambda(lambda_abs)
    a, y2, single = _check_problem(np.asarray(a), np.asarray(y))
    if penalty not in ("tv", "l1"):
        raise ValueError(f"penalty must be 'tv' or 'l1', got {penalty!r}")
    nx, ny, nz = (int(s) for s in grid_shape)
    if nx * ny * nz != a.shape[1]:
        raise ValueError(f"grid_shape {tuple(grid_shape)} holds {nx * ny * nz} voxels, system matrix has {a.shape[1]}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}")
    y2 = y2.astype(a.dtype, copy=False)
    f = y2.shape[0]
    lip = spectral_norm_squared(a) + lam
    aty = y2 @ a
    tau = (weight * np.max(np.abs(aty), axis=1) / lip).astype(a.dtype)  # prox weight τ/L
    grid = (f, nz, ny, nx)  # C order of an x-fastest voxel vector
    axes = tuple(ax for ax, n in zip((1, 2, 3), (nz, ny, nx), strict=True) if n > 1)
    x = np.zeros((f, a.shape[1]), dtype=a.dtype)
    z = x.copy()
    t = 1.0
    dual = None
    for _ in range(int(iterations)):
        grad = (z @ a.T - y2) @ a + lam * z
        b = z - grad / lip
        if penalty == "l1":
            x_new = b - tau[:, None]
            if positivity:
                np.maximum(x_new, 0, out=x_new)
            else:
                x_new = np.sign(b) * np.maximum(np.abs(b) - tau[:, None], 0)
        else:
            xv, dual = prox_tv(b.reshape(grid), tau, axes, inner_iterations, positivity, dual)
            x_new = xv.reshape(f, -1)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x[0] if single else x


def solve(system_matrix_rows: np.ndarray, measurement_rows: np.ndarray, params, grid_shape) -> tuple[np.ndarray, float]:
    """Reconstruct frames with the solver ``params.solver``.

    system_matrix_rows : (M, P) complex; measurement_rows : (Q, M) complex.
    Returns x (Q, P) in ``params.dtype`` (delta-sample units) and λ_abs.
    """
    a, y = stack_real(system_matrix_rows, measurement_rows, params.dtype)
    lam = absolute_lambda(a, params.lambda_)
    return make_solver(a, lam, params, grid_shape)(y), lam


def make_solver(a: np.ndarray, lambda_abs: float, params, grid_shape):
    """Prepare ``params.solver`` once for A and return ``solve(y) -> x``.

    The expensive set-up (Gram matrix, Cholesky factor) happens here, so a
    stream of frame batches pays it once.
    """
    if params.solver == "kaczmarz":
        k = Kaczmarz(a, lambda_abs)
        return lambda y: k.solve(y, params.iterations, params.positivity)
    if params.solver == "cgnr":
        return lambda y: cgnr(a, y, lambda_abs, params.iterations, params.positivity)
    if params.solver == "fista":
        return lambda y: fista(
            a,
            y,
            lambda_abs,
            grid_shape=grid_shape,
            penalty=params.fista_penalty,
            weight=params.fista_weight,
            iterations=params.iterations,
            positivity=params.positivity,
            inner_iterations=params.tv_inner_iterations,
        )
    if params.solver == "fast":
        return fast_solver(ReconOperator.build(a, lambda_abs), params.positivity)
    raise ValueError(f"unknown solver {params.solver!r}")  # pragma: no cover - ReconParams validates


def fast_solver(op: ReconOperator, positivity: bool):
    """``solve(y) -> x`` with a built (or cached) operator: x = y K, clamped at 0 when asked."""

    def solve_block(y: np.ndarray) -> np.ndarray:
        x = op.apply(y)
        if positivity:
            _kernels.clamp_negative_kernel(x if x.ndim == 2 else x[None, :])
        return x

    return solve_block
