"""The linear reconstruction operator, built once and applied to frame blocks.

For a fixed system matrix and Tikhonov weight the regularised least-squares
image is a *linear* map of the frame's selected spectrum. With the real-stacked
rows A = [Re S; Im S] (R = 2M rows, P voxels; see :func:`recon.solvers.stack_real`)
and y = [Re u; Im u],

    x = argmin ½‖Ax − y‖² + ½λ‖x‖² = Aᵀ(AAᵀ + λI)⁻¹ y = (AᵀA + λI)⁻¹Aᵀ y,

which is the complex Tikhonov solution x = Sᴴ(SSᴴ + λI)⁻¹u restricted to real
x (the push-through identity; Hansen, *Rank-Deficient and Discrete Ill-Posed
Problems*, SIAM 1998, §5.1; MPIReco.jl solves the same problem iteratively
with regularised Kaczmarz). :class:`ReconOperator` stores the operator
transposed, K = (AAᵀ + λI)⁻¹A (R × P, float32), so that a block of F frames
(rows of Y, F × R) is reconstructed by ONE BLAS product, X = Y K (sgemm).

Building K costs one Gram matrix (R²P flops), one float64 Cholesky factor
(R³/3) and two triangular solves against A (2R²P); it is cached on disk, keyed
by the system matrix file's SHA-256 and every parameter that shapes A
(:func:`cache_key`), so a live session or a worker pays it once per
calibration and λ. With more rows than voxels (small 2D grids) the P × P
normal matrix is factored instead: K = A(AᵀA + λI)⁻¹, same shape, same apply.

Region functionals: a region estimator that is linear in the image,
r = W x (W: n_regions × P, from :func:`recon.quantify.region_weights` or the
plain indicator masks), composed with the operator gives r = W Kᵀ y, so each
region's value comes straight from a frame's selected spectrum with an
R × n_regions product (microseconds per frame): :meth:`ReconOperator.region_functionals`.

Why not a truncated SVD: measured on the 37³ benchmark problem (2,000 complex
rows, λ_rel = 1e-3), the eigenvalues of AAᵀ above 1e-2·λ still number 3,016 of
4,000 (75 %), and truncating there moves the Tikhonov image by 4.8 %; a
rank-r operator costs r(R + P) per frame against RP, so it saves nothing at an
acceptable error. The full-rank explicit operator is used.

The result is the Tikhonov solution WITHOUT positivity; any clamp (a
non-linear step) belongs after frame averaging and after region sums, not
before them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from recon.checksum import sampled_digest

#: Bump when the stored layout or the maths changes (old cache entries then miss).
CACHE_FORMAT = 1
#: Columns (voxels) of A solved per triangular-solve block while building K.
_COLUMN_BLOCK = 2048


def _check_lambda(lambda_abs: float) -> float:
    if not (isinstance(lambda_abs, (int, float, np.floating)) and math.isfinite(lambda_abs)) or lambda_abs <= 0:
        raise ValueError(f"lambda_abs must be a finite number > 0 (AAᵀ is singular in general), got {lambda_abs!r}")
    return float(lambda_abs)


def _gram64(a: np.ndarray, block: int = 256) -> np.ndarray:
    """G = AAᵀ in float64, summed over column blocks of ``block`` voxels.

    Each block's product runs in A's dtype (sgemm/syrk speed) and the blocks are
    summed in float64, so a float32 rounding error accumulates over 256 terms,
    not P: on the 19³ benchmark problem (2,000 real rows) the operator then
    differs from the float64 dense solution by 1.2e-4 of max |x| (2.7e-4
    with a plain float32 Gram, 2e-5 with a float64 one at 2.5× the time).
    """
    r, p = a.shape
    g = np.zeros((r, r), dtype=np.float64)
    for start in range(0, p, block):
        blk = np.ascontiguousarray(a[:, start : start + block])
        g += blk @ blk.T
    return g


def _normal64(a: np.ndarray, block: int = 4096) -> np.ndarray:
    """N = AᵀA accumulated in float64 over row blocks."""
    r, p = a.shape
    n = np.zeros((p, p), dtype=np.float64)
    for start in range(0, r, block):
        blk = np.asarray(a[start : start + block], dtype=np.float64)
        n += blk.T @ blk
    return n


@dataclass
class ReconOperator:
    """K = (AAᵀ + λI)⁻¹A (R × P float32): a block of frames Y (F × R) maps to X = Y K.

    Attributes
    ----------
    matrix : (R, P) float32 (or float64 when built from float64 rows), C-contiguous
    lambda_abs : float, the absolute Tikhonov weight λ used
    form : {"row_space", "voxel_space"}, which normal matrix was factored
    key : str or None, the cache key it was built under
    """

    matrix: np.ndarray
    lambda_abs: float
    form: str
    key: str | None = None

    @property
    def num_rows(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def num_voxels(self) -> int:
        return int(self.matrix.shape[1])

    @classmethod
    def build(cls, a: np.ndarray, lambda_abs: float, *, overwrite_a: bool = False, key: str | None = None):
        """Build K from the real-stacked rows ``a`` (R, P) float32/float64.

        ``overwrite_a=True`` computes K in place of ``a`` (which must then be
        writeable and C-contiguous), so building needs A plus the R × R (or
        P × P) float64 factor and one column block, not a second R × P array.
        The Gram/normal matrix and its Cholesky factor are float64: the
        regularised Gram matrix can have a condition number of 1e6.
        """
        lam = _check_lambda(lambda_abs)
        if a.ndim != 2 or a.dtype not in (np.float32, np.float64) or 0 in a.shape:
            raise ValueError(
                f"needs a non-empty real 2-D float32/float64 matrix (rows, voxels), got {a.dtype} {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"system matrix {a.shape} contains NaN or inf")
        rows, voxels = a.shape
        if overwrite_a:
            if not a.flags.c_contiguous or not a.flags.writeable:
                raise ValueError("overwrite_a needs a writeable C-contiguous matrix")
            out = a
        else:
            out = np.empty((rows, voxels), dtype=a.dtype)
        if rows <= voxels:
            g = _gram64(a)
            g[np.diag_indices_from(g)] += lam
            # Factor in float64; the two triangular solves against A run in A's
            # dtype (strsm), whose error grows with cond(L) = cond(G + λI)^½ only.
            low = np.linalg.cholesky(g).astype(a.dtype)
            del g
            for start in range(0, voxels, _COLUMN_BLOCK):
                cols = slice(start, min(start + _COLUMN_BLOCK, voxels))
                z = scipy.linalg.solve_triangular(low, a[:, cols], lower=True, check_finite=False)
                out[:, cols] = scipy.linalg.solve_triangular(low, z, lower=True, trans="T", check_finite=False)
            form = "row_space"
        else:
            n = _normal64(a)
            n[np.diag_indices_from(n)] += lam
            chol = scipy.linalg.cho_factor(n, lower=True, overwrite_a=True, check_finite=False)
            # K = A (AᵀA + λI)⁻¹, i.e. Kᵀ = N⁻¹Aᵀ, row block by row block.
            for start in range(0, rows, _COLUMN_BLOCK):
                blk = slice(start, min(start + _COLUMN_BLOCK, rows))
                out[blk] = scipy.linalg.cho_solve(chol, np.asarray(a[blk], np.float64).T, check_finite=False).T
            form = "voxel_space"
        return cls(np.ascontiguousarray(out), lam, form, key)

    def apply(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X (F, P) = Y K for a block of frames Y (F, R), in K's dtype; one BLAS product (sgemm). (P,) for (R,)."""
        y = np.asarray(y)
        single = y.ndim == 1
        y2 = y[None, :] if single else y
        if y2.ndim != 2 or y2.shape[1] != self.num_rows:
            raise ValueError(f"frames have shape {y.shape}, expected (F, {self.num_rows}) or ({self.num_rows},)")
        y2 = np.ascontiguousarray(y2, dtype=self.matrix.dtype)
        x = np.matmul(y2, self.matrix, out=out)
        return x[0] if single else x

    def region_functionals(self, weights: np.ndarray, scale: float = 1.0) -> RegionFunctionals:
        """The linear functionals F = scale · W Kᵀ (n_regions × R) of a region estimator W.

        weights : (n_regions, P) or (P,) — a linear region estimator on the
        image (e.g. ``recon.quantify.region_weights``, or indicator masks);
        scale : factor from solver units to the estimator's input unit (e.g.
        the delta-sample concentration in mol/L). ``F.apply(Y)`` equals
        ``scale · W @ (Y K)ᵀ`` up to float32 rounding.
        """
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2 or w.shape[1] != self.num_voxels:
            raise ValueError(f"weights have shape {np.shape(weights)}, expected (n_regions, {self.num_voxels})")
        if not np.all(np.isfinite(w)) or not math.isfinite(scale):
            raise ValueError("weights and scale must be finite")
        # (R × P) @ (P × n) in K's dtype, block of rows by block of rows.
        ft = np.empty((self.num_rows, w.shape[0]), dtype=np.float64)
        wt = w.T.astype(self.matrix.dtype)
        for start in range(0, self.num_rows, 4096):
            rows = slice(start, min(start + 4096, self.num_rows))
            ft[rows] = self.matrix[rows] @ wt
        return RegionFunctionals(np.ascontiguousarray((scale * ft).astype(np.float32)))

    # -- disk cache ---------------------------------------------------------- #

    def save(self, cache_dir: str | os.PathLike, key: str) -> Path:
        """Write ``<cache_dir>/<key>.npy`` (+ ``.json`` record) atomically; returns the .npy path."""
        _check_key(key)
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "lambda_abs": self.lambda_abs,
            "form": self.form,
            "shape": list(self.matrix.shape),
            "dtype": str(self.matrix.dtype),
        }
        target = folder / f"{key}.npy"
        # Write to a temporary name and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, self.matrix, allow_pickle=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta["bytes"] = os.path.getsize(target)
        meta["sampled_sha256"] = sampled_digest(target)
        meta_path = folder / f"{key}.json"
        meta_tmp = meta_path.with_suffix(".json.tmp")
        meta_tmp.write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        os.replace(meta_tmp, meta_path)
        self.key = key
        return target

    @classmethod
    def load(cls, cache_dir: str | os.PathLike, key: str, *, mmap: bool = False) -> ReconOperator | None:
        """The operator cached under ``key``, or None when absent or unusable (then rebuild).

        ``mmap``: memory-map the matrix read-only (its pages are read when first used).
        An entry whose file size or sampled digest (``recon.checksum.sampled_digest``)
        differs from its record is unusable (truncated or overwritten)."""
        _check_key(key)
        folder = Path(cache_dir)
        path = folder / f"{key}.npy"
        try:
            meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return None
            if "bytes" in meta and os.path.getsize(path) != meta["bytes"]:
                return None
            if "sampled_sha256" in meta and sampled_digest(path) != meta["sampled_sha256"]:
                return None
            matrix = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if str(matrix.dtype) != meta.get("dtype") or list(matrix.shape) != meta.get("shape") or matrix.ndim != 2:
            return None
        return cls(
            np.asarray(matrix) if mmap else np.ascontiguousarray(matrix),
            float(meta["lambda_abs"]),
            str(meta["form"]),
            key,
        )


@dataclass
class RegionFunctionals:
    """Per-region linear functionals of a frame's selected spectrum.

    transposed : (R, n_regions) float32 = scale · K Wᵀ; ``apply(Y)`` is Y @ transposed.
    """

    transposed: np.ndarray

    @property
    def num_regions(self) -> int:
        return int(self.transposed.shape[1])

    def apply(self, y: np.ndarray) -> np.ndarray:
        """(F, n_regions) region values for frames Y (F, R); (n_regions,) for (R,)."""
        y = np.asarray(y)
        single = y.ndim == 1
        y2 = y[None, :] if single else y
        if y2.ndim != 2 or y2.shape[1] != self.transposed.shape[0]:
            raise ValueError(
                f"frames have shape {y.shape}, expected (F, {self.transposed.shape[0]}) or ({self.transposed.shape[0]},)"
            )
        r = np.ascontiguousarray(y2, dtype=np.float32) @ self.transposed
        return r[0] if single else r


def _check_key(key: str) -> None:
    if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"cache key must be 64 lowercase hex digits (a SHA-256), got {key!r}")


def _digest(arr: Any) -> str:
    a = np.ascontiguousarray(np.asarray(arr))
    return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()


def cache_key(
    *,
    system_matrix_sha256: str,
    lambda_abs: float,
    params: dict,
    channel: np.ndarray,
    frequency: np.ndarray,
    row_weights: np.ndarray,
    extra: dict | None = None,
) -> str:
    """SHA-256 naming an operator: the calibration file's SHA-256, λ_abs, the
    plan (``ReconParams.as_dict()``), the selected rows and their weights.

    Fields of the plan that do not shape A (frames, average, background mode
    of the scan) are dropped so different scans share one operator; the row
    weights are in the key because ``weighting="whiten"`` derives them from the
    scan's background frames.
    """
    plan = {k: v for k, v in params.items() if k not in _SCAN_ONLY_PARAMS}
    record = {
        "format": CACHE_FORMAT,
        "system_matrix_sha256": system_matrix_sha256,
        "lambda_abs": float(lambda_abs).hex(),
        "plan": plan,
        "rows": _digest(np.stack([np.asarray(channel, np.int64), np.asarray(frequency, np.int64)])),
        "row_weights": _digest(np.asarray(row_weights, np.float64)),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


#: Plan fields that act on the scan only, never on the operator.
_SCAN_ONLY_PARAMS = frozenset({"frames", "average", "background", "positivity", "iterations", "solver"})


__all__ = ["ReconOperator", "RegionFunctionals", "cache_key", "CACHE_FORMAT"]
