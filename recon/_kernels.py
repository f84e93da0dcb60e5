"""Private numba kernels.

Rules (sigpy's ``interp.py`` habit): every kernel takes only arrays and
scalars, fills a preallocated output and reads no global, because numba
freezes globals at compile time and a cached kernel would silently keep a
stale value. The numpy-facing wrappers that validate inputs live in
``physics.py`` and ``solvers.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _langevin_pair(xi):
    """Return (L(ξ)/ξ, L'(ξ)) for ξ ≥ 0, stable near 0.

    Below ξ = 0.01 the closed forms cancel (coth ξ ≈ 1/ξ), so Taylor series
    are used; their first omitted terms are below 1e-17 there.
    """
    if xi < 1e-2:
        x2 = xi * xi
        l_over_xi = 1.0 / 3.0 - x2 / 45.0 + 2.0 * x2 * x2 / 945.0 - x2 * x2 * x2 / 4725.0
        dl = 1.0 / 3.0 - x2 / 15.0 + 2.0 * x2 * x2 / 189.0 - x2 * x2 * x2 / 675.0
        return l_over_xi, dl
    if xi > 30.0:
        # coth ξ = 1 to double precision; 1/sinh² underflows harmlessly.
        lang = 1.0 - 1.0 / xi
        return lang / xi, 1.0 / (xi * xi)
    # One exp instead of sinh and cosh: with e = exp(−2ξ),
    # coth ξ = (1 + e)/(1 − e) and 1/sinh² ξ = 4e/(1 − e)².
    one_minus = -np.expm1(-2.0 * xi)
    e = 1.0 - one_minus
    lang = (1.0 + e) / one_minus - 1.0 / xi
    return lang / xi, 1.0 / (xi * xi) - 4.0 * e / (one_minus * one_minus)


@njit(cache=True)
def langevin_kernel(xi, out_l, out_dl):
    """Fill out_l = L(xi), out_dl = L'(xi) elementwise (xi any sign)."""
    for i in range(xi.shape[0]):
        x = xi[i]
        a = abs(x)
        lx, dl = _langevin_pair(a)
        out_l[i] = lx * x  # L is odd
        out_dl[i] = dl  # L' is even


@njit(cache=True, parallel=True)
def induced_signal_kernel(
    positions,
    weights,
    group,
    gradient,
    drive_amplitude,
    drive_omega,
    drive_phase,
    coil_sensitivity,
    beta,
    amplitude,
    times,
    out,
):
    """Induced receive-coil voltage of equilibrium (Langevin) particles.

    For every time sample t and point p (at ``positions[p]``, m) the flux
    density is B = G∘r − A∘sin(ωt + φ) (T), its time derivative
    dB/dt = −A∘ω∘cos(ωt + φ). The magnetisation direction vector
    f(B) = L(β|B|)·B/|B| has the Jacobian
    J = β L'(β|B|) n nᵀ + (L(β|B|)/|B|)(I − n nᵀ), n = B/|B|, so
    d f / dt = J dB/dt exactly (analytic derivative: no finite-difference
    error, and no division by |B| at the field-free point because
    L(ξ)/ξ → 1/3).

    ``out[group[p], c, t] += −amplitude · coil[c] · weights[p] · (J dB/dt)_c``;
    ``amplitude`` carries μ0·M_s. ``out`` must be zeroed by the caller.
    Parallel over time samples: each thread owns its own ``t`` column, so
    accumulation into groups never races.
    """
    n_points = positions.shape[0]
    n_channels = out.shape[1]
    n_times = times.shape[0]
    for it in prange(n_times):
        t = times[it]
        d0 = drive_amplitude[0] * np.sin(drive_omega[0] * t + drive_phase[0])
        d1 = drive_amplitude[1] * np.sin(drive_omega[1] * t + drive_phase[1])
        d2 = drive_amplitude[2] * np.sin(drive_omega[2] * t + drive_phase[2])
        v0 = -drive_amplitude[0] * drive_omega[0] * np.cos(drive_omega[0] * t + drive_phase[0])
        v1 = -drive_amplitude[1] * drive_omega[1] * np.cos(drive_omega[1] * t + drive_phase[1])
        v2 = -drive_amplitude[2] * drive_omega[2] * np.cos(drive_omega[2] * t + drive_phase[2])
        for p in range(n_points):
            w = weights[p]
            if w == 0.0:
                continue
            b0 = gradient[0] * positions[p, 0] - d0
            b1 = gradient[1] * positions[p, 1] - d1
            b2 = gradient[2] * positions[p, 2] - d2
            bn = np.sqrt(b0 * b0 + b1 * b1 + b2 * b2)
            xi = beta * bn
            l_over_xi, dl = _langevin_pair(xi)
            a2 = beta * l_over_xi  # L(ξ)/|B|
            a1 = beta * dl  # β L'(ξ)
            if bn > 0.0:
                n0 = b0 / bn
                n1 = b1 / bn
                n2 = b2 / bn
            else:
                n0 = 0.0
                n1 = 0.0
                n2 = 0.0
            nv = n0 * v0 + n1 * v1 + n2 * v2
            f0 = a2 * v0 + (a1 - a2) * n0 * nv
            f1 = a2 * v1 + (a1 - a2) * n1 * nv
            f2 = a2 * v2 + (a1 - a2) * n2 * nv
            g = group[p]
            scale = -amplitude * w
            for c in range(n_channels):
                if c == 0:
                    fc = f0
                elif c == 1:
                    fc = f1
                else:
                    fc = f2
                out[g, c, it] += scale * coil_sensitivity[c] * fc


@njit(cache=True, parallel=True)
def kaczmarz_primal_kernel(a, row_energy, y, lam, iterations, positivity, x, v):
    """Regularised Kaczmarz on real rows, a block of frames at once.

    Solves min ‖Ax − y‖² + λ‖x‖² through the extended consistent system
    [A  √λ I][x; v] = y (MPIReco / RegularizedLeastSquares.jl): row j updates
    β = (y_j − a_jᵀx − √λ v_j) / (‖a_j‖² + λ), x += β a_j, v_j += √λ β.
    Positivity is projected after every full sweep, as MPIReco does.

    a : (M, P) rows; row_energy : (M,) = ‖a_j‖²; y : (F, M); x : (F, P) and
    v : (F, M) are updated in place (start from zeros for a cold start).
    Frames are independent, so they run in parallel; each frame reuses the
    row from cache, which amortises row access across the block.
    """
    n_frames = y.shape[0]
    n_rows = a.shape[0]
    n_vox = a.shape[1]
    sq = np.sqrt(lam)
    for f in prange(n_frames):
        for _ in range(iterations):
            for j in range(n_rows):
                dot = 0.0
                for p in range(n_vox):
                    dot += a[j, p] * x[f, p]
                beta = (y[f, j] - dot - sq * v[f, j]) / (row_energy[j] + lam)
                for p in range(n_vox):
                    x[f, p] += beta * a[j, p]
                v[f, j] += sq * beta
            if positivity:
                for p in range(n_vox):
                    if x[f, p] < 0.0:
                        x[f, p] = 0.0


@njit(cache=True)
def kaczmarz_dual_block_kernel(gram, residual0, lam, v, w, q, start, stop):
    """Rows ``start … stop−1`` of one regularised Kaczmarz sweep, in row space.

    Kaczmarz only ever adds multiples of rows to x, so within a sweep
    x = x0 + Aᵀw and a_jᵀx = a_jᵀx0 + (Gw)_j with G = AAᵀ: the sweep is
    Gauss–Seidel on (G + λI)w = y − Ax0 − √λ v, O(R) per row instead of O(P),
    with exactly the row-action iterates. This kernel does the sequential
    part inside one block of rows; the caller adds the block's effect on the
    later rows with one BLAS product (q[:, stop:] += w[:, block] @ G[block, stop:]).

    gram : (R, R) symmetric; residual0 : (F, R) = y − A x0 (x0 = sweep start);
    v : (F, R) auxiliary variable (persists across sweeps), updated;
    w : (F, R) this sweep's row coefficients, written for the block;
    q : (F, R) accumulated (Gw) of earlier rows, updated inside the block.
    Serial on purpose: a block is small (frames × block² flops) and is called
    R/block times per sweep, so thread start-up would cost more than it saves.
    """
    n_frames = residual0.shape[0]
    sq = np.sqrt(lam)
    for f in range(n_frames):
        for j in range(start, stop):
            beta = (residual0[f, j] - q[f, j] - sq * v[f, j]) / (gram[j, j] + lam)
            w[f, j] = beta
            v[f, j] += sq * beta
            for i in range(j + 1, stop):
                q[f, i] += beta * gram[j, i]


@njit(cache=True)
def clamp_negative_kernel(x):
    """x[x < 0] = 0 in place (2-D array), without a temporary mask."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[i, j] < 0.0:
                x[i, j] = 0.0
