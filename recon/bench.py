"""Benchmark (not a test): the reconstruction engine at OpenMPIData size, honestly timed.

``python -m recon bench`` builds 3D problems of 37×37×37 voxels (50,653) with
2,000 and 5,000 selected complex frequency rows from the physics (the
small-divider 3D scanner of :func:`recon.simulate.scanner_preset`, V = 4080
samples; rows chosen by SNR on a coarse 10³ pre-calibration; the real-stacked
matrix A = [Re S; Im S] in float32). Frames are y = A·x_true + white noise,
x_true the 3D mouse phantom (known iron per organ) on the same grid.

For each row count, in the same run and on the same A and frames:

- ``CLI default``: exactly ``ReconParams()`` (what ``python -m recon
  reconstruct`` runs): regularised Kaczmarz, 10 sweeps, positivity;
- ``operator``: :class:`recon.operator.ReconOperator` (x = y K, one sgemm per
  block of frames), its set-up = build (Gram, Cholesky, triangular solves),
  and the cached alternative (save + load from disk);
- ``region functionals``: F = W Kᵀ applied to frames (one small product per
  block), W the region estimator of :func:`recon.quantify.region_weights` (the
  GTM of ``python -m recon quantify``, with each organ's exact spread through
  this operator): the numbers live monitoring reports, straight from spectra;
- baselines, the plain numpy/scipy dense Tikhonov solve of the same maths,
  x = Aᵀ(AAᵀ + λI)⁻¹y, written as a user would (six lines:
  ``G = A @ A.T``; ``G += λI``; ``c = cho_factor(G)``;
  ``X = cho_solve(c, Y.T).T @ A``), once in float64 (numpy's default
  precision: "numpy/scipy baseline") and once in float32 (same code on the
  float32 matrix, printed for transparency).

Every throughput figure is the median of ``--repeats`` (≥ 3) timed runs;
every set-up is timed in full and printed beside it, and the "end to end"
column charges each method its whole set-up for the frames of one run.
Peak memory = peak resident set size during the step minus the resident size
before it (Linux ``/proc/self/clear_refs``; 0 where it cannot be read).
Accuracy: iron per organ (ng) against the phantom's known iron: from each image
by plain organ-mask sums (what a linear image without the drive fundamentals
loses shows there), and from the region functionals (the estimator). The
phantom is made with the same matrix, so this checks the composition, not the
physics: accuracy on independent phantoms is ``benchmarks/accuracy.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from functools import partial

import numpy as np

LIVE_TARGET_FPS = 46.4  # Bruker 3D frame rate (one frame = 21.54 ms)
FUNCTIONALS_TARGET_FPS = 1000.0
BASELINE_RATIO_TARGET = 1.5  # at 5,000 rows, against the float64 numpy/scipy baseline


def build_problem(grid: int, rows: int, frames: int, seed: int, noise_rel: float = 0.002):
    """A (2·rows, grid³) float32, frames y (F, 2·rows), x_true (grid³,), λ source info."""
    import dataclasses

    from recon import phantoms
    from recon.physics import (
        Particles,
        grid_centres_m,
        induced_voltage,
        iron_mass_to_magnetite_volume_m3,
        voltage_to_spectrum,
    )
    from recon.simulate import (
        DEFAULT_DELTA_CONCENTRATION_MOL_PER_L,
        IRON_MOLAR_MASS_G_PER_MOL,
        scanner_preset,
        simulate_system_matrix,
        system_matrix_geometry,
    )

    rng = np.random.default_rng(seed)
    scanner = dataclasses.replace(scanner_preset(3), oversampling=1)
    particles = Particles()
    # SNR on a coarse pre-calibration picks the rows (like a real protocol).
    coarse = simulate_system_matrix(scanner, particles, (10, 10, 10), rng=rng, delta_subsamples=1)
    snr = coarse.snr.copy()
    snr[:, scanner.frequencies_hz < 80e3] = 0
    flat = np.argsort(snr.ravel())[::-1][:rows]
    flat.sort()
    ch, fr = np.unravel_index(flat, snr.shape)
    size = (grid, grid, grid)
    fov, center = system_matrix_geometry(scanner, size)
    centres = grid_centres_m(size, fov, center)
    p = centres.shape[0]
    voxel_l = float(np.prod(fov / np.asarray(size))) * 1e3
    iron_kg = DEFAULT_DELTA_CONCENTRATION_MOL_PER_L * voxel_l * IRON_MOLAR_MASS_G_PER_MOL * 1e-3
    w = float(iron_mass_to_magnetite_volume_m3(iron_kg))
    a = np.empty((2 * rows, p), dtype=np.float32)
    chunk = 512
    for start in range(0, p, chunk):
        stop = min(start + chunk, p)
        n = stop - start
        volt = induced_voltage(scanner, particles, centres[start:stop], np.full(n, w), np.arange(n), n)
        spec = voltage_to_spectrum(volt, scanner)[:, ch, fr]  # (n, rows)
        a[:rows, start:stop] = spec.real.T
        a[rows:, start:stop] = spec.imag.T
    inclusions = phantoms.mouse(fov, dims=3)
    raster = phantoms.rasterise(inclusions, size, fov, center, factor=1, dims=3)
    x_true = (phantoms.iron_image_mol_per_l(raster, size, fov, center) / DEFAULT_DELTA_CONCENTRATION_MOL_PER_L).astype(
        np.float32
    )
    clean = a @ x_true
    sigma = noise_rel * float(np.sqrt(np.mean(clean.astype(np.float64) ** 2)))
    y = (clean[None, :] + sigma * rng.standard_normal((frames, 2 * rows))).astype(np.float32)
    info = {"fov_m": fov.tolist(), "center_m": center.tolist(), "noise_sigma": sigma, "voxel_l": voxel_l}
    return a, y, x_true, info | {"inclusions": inclusions, "size": size}


def _rss_bytes(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _reset_peak() -> int:
    """Reset the peak RSS (Linux ≥ 4.0) and return the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass
    return _rss_bytes("VmRSS")


def measured(fn):
    """(result, seconds, peak extra bytes) of one call."""
    before = _reset_peak()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    return out, dt, max(_rss_bytes("VmHWM") - before, 0)


def organ_masks(info: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, indicator masks (n, P), known iron (n,) ng) of the phantom's organs on the grid."""
    from recon.physics import grid_centres_m

    centres = grid_centres_m(info["size"], np.asarray(info["fov_m"]), np.asarray(info["center_m"]))
    incs = info["inclusions"]
    masks = np.stack([inc.contains(centres, slab_2d=False) for inc in incs]).astype(np.float64)
    return [inc.name for inc in incs], masks, np.array([inc.iron_ng for inc in incs])


def iron_ng_per_delta_unit(info: dict) -> float:
    """ng of iron in one voxel at x = 1 (the delta-sample concentration)."""
    from recon.simulate import DEFAULT_DELTA_CONCENTRATION_MOL_PER_L, IRON_MOLAR_MASS_G_PER_MOL

    return DEFAULT_DELTA_CONCENTRATION_MOL_PER_L * info["voxel_l"] * IRON_MOLAR_MASS_G_PER_MOL * 1e9


def region_functionals(op, a: np.ndarray, masks: np.ndarray, names: list[str], info: dict):
    """F = δ · W Kᵀ: the GTM region estimator (``recon.quantify.region_weights``) with each
    organ's exact spread (its noise-free signal A·χ reconstructed by this operator),
    composed with the operator; F·y is iron per organ (ng) from a frame y."""
    from recon.quantify import Grid, Roi, region_weights
    from recon.simulate import DEFAULT_DELTA_CONCENTRATION_MOL_PER_L

    grid = Grid(tuple(info["size"]), tuple(info["fov_m"]), tuple(info["center_m"]))
    spread = op.apply(np.ascontiguousarray((a @ masks.T.astype(a.dtype)).T)).astype(np.float64)
    rois = [Roi(name, "region", mask > 0.5) for name, mask in zip(names, masks, strict=True)]
    weights = region_weights(grid, rois, spread=spread)
    return op.region_functionals(weights, scale=DEFAULT_DELTA_CONCENTRATION_MOL_PER_L)


def dense_baseline(a: np.ndarray, lam: float):
    """The plain numpy/scipy dense Tikhonov solve, as a user writes it: (set-up, solve)."""
    import scipy.linalg

    def setup():
        g = a @ a.T
        g[np.diag_indices_from(g)] += lam
        return scipy.linalg.cho_factor(g)

    def solve(c, y):
        return scipy.linalg.cho_solve(c, y.T.astype(a.dtype)).T @ a

    return setup, solve


def interleaved_rates(jobs: dict, repeats: int) -> dict:
    """{name: (median frames/s, times)} for ``jobs`` = {name: (fn, frames)}, timed round robin.

    Every method is timed once per round, ``repeats`` rounds, so a change of
    machine load hits all of them alike and the ratios of medians hold.
    """
    times: dict = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, (fn, _frames) in jobs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (jobs[name][1] / statistics.median(ts), ts) for name, ts in times.items()}


def run_rows(grid: int, rows: int, frames: int, repeats: int, seed: int, kaczmarz_frames: int) -> dict:
    from recon import solvers
    from recon.operator import ReconOperator
    from recon.params import ReconParams

    params = ReconParams()  # the CLI defaults, unchanged
    t = time.perf_counter()
    a, y, x_true, info = build_problem(grid, rows, frames, seed)
    out: dict = {"grid": grid, "voxels": int(a.shape[1]), "complex_rows": rows, "frames": frames}
    out["problem_build_s"] = time.perf_counter() - t
    out["matrix_bytes"] = int(a.nbytes)
    lam = solvers.absolute_lambda(a, params.lambda_)
    out["lambda_abs"] = lam
    names, masks, known = organ_masks(info)
    ng = iron_ng_per_delta_unit(info)
    out["organs"] = names
    out["known_iron_ng"] = known.tolist()
    out["ideal_image_iron_ng"] = (masks @ x_true.astype(np.float64) * ng).tolist()

    def organ_iron(x: np.ndarray) -> list:
        return (masks @ np.asarray(x, np.float64).mean(axis=0) * ng).tolist()

    # Set-ups, each timed in full: the operator (and its cache round trip), the
    # functionals, the CLI default's Gram matrix, the float32 baseline.
    op, build_s, build_peak = measured(partial(ReconOperator.build, a, lam))
    cache = tempfile.TemporaryDirectory()
    key = "0" * 64
    _, save_s, _ = measured(partial(op.save, cache.name, key))
    funcs, f_build_s, _ = measured(partial(region_functionals, op, a, masks, names, info))
    kz, kz_setup_s, kz_peak = measured(partial(solvers.Kaczmarz, a, lam))
    setup32, solve32 = dense_baseline(a, lam)
    chol32, b32_setup_s, b32_peak = measured(setup32)
    yk = y[:kaczmarz_frames]
    many = np.tile(y, (max(1, 4096 // frames), 1))
    kz_name = "CLI default (Kaczmarz, 10 sweeps)"
    rates = interleaved_rates(
        {
            "operator": (partial(op.apply, y), frames),
            "region functionals": (partial(funcs.apply, many), many.shape[0]),
            kz_name: (partial(kz.solve, yk, params.iterations, params.positivity), yk.shape[0]),
            "numpy/scipy dense, float32": (partial(solve32, chol32, y), frames),
        },
        repeats,
    )
    x_op = op.apply(y)
    table: dict = {
        "operator": {"setup_s": build_s, "save_s": save_s, "peak_bytes": build_peak, "iron_ng": organ_iron(x_op)},
        "region functionals": {
            "setup_s": build_s + f_build_s,
            "peak_bytes": 0,
            "iron_ng": funcs.apply(y).mean(axis=0).tolist(),
        },
        kz_name: {
            "setup_s": kz_setup_s,
            "peak_bytes": kz_peak,
            "frames_timed": int(yk.shape[0]),
            "iron_ng": organ_iron(kz.solve(yk, params.iterations, params.positivity)),
        },
        "numpy/scipy dense, float32": {
            "setup_s": b32_setup_s,
            "peak_bytes": b32_peak,
            "iron_ng": organ_iron(solve32(chol32, y)),
        },
    }
    del op, kz, chol32, setup32, solve32, many

    # The float64 baseline needs A in float64 (2x A); the float32 A is dropped
    # and the operator comes back from its disk cache (timed: the cached set-up),
    # so the float64 baseline and the operator are again timed round robin.
    a64 = a.astype(np.float64)
    del a
    setup64, solve64 = dense_baseline(a64, lam)
    chol64, b64_setup_s, b64_peak = measured(setup64)
    loaded, load_s, _ = measured(partial(ReconOperator.load, cache.name, key))
    if loaded is None:
        raise RuntimeError("the operator just saved did not load back")
    table["operator"]["setup_cached_s"] = load_s
    table["region functionals"]["setup_cached_s"] = load_s + f_build_s
    rates64 = interleaved_rates(
        {
            "operator (again)": (partial(loaded.apply, y), frames),
            "numpy/scipy dense, float64": (partial(solve64, chol64, y), frames),
        },
        repeats,
    )
    x_b = solve64(chol64, y)
    table["numpy/scipy dense, float64"] = {"setup_s": b64_setup_s, "peak_bytes": b64_peak, "iron_ng": organ_iron(x_b)}
    out["operator_vs_float64_dense_max_rel_diff"] = float(np.abs(x_b - x_op).max() / np.abs(x_b).max())
    cache.cleanup()
    for name, (fps, ts) in rates.items():
        table[name].update(fps=fps, times_s=ts)
    fps64, ts64 = rates64["numpy/scipy dense, float64"]
    table["numpy/scipy dense, float64"].update(fps=fps64, times_s=ts64)
    # the float64 ratio is taken against the operator's rate in the same rounds
    out["operator_fps_beside_float64"] = rates64["operator (again)"][0]
    out["table"] = table
    return out


def format_report(results: list[dict], load: str) -> str:
    mb = 1 / 2**20
    lines = [f"machine load when measured (uptime): {load}", ""]
    for r in results:
        t = r["table"]
        base64, base32 = t["numpy/scipy dense, float64"], t["numpy/scipy dense, float32"]
        lines += [
            f"== {r['grid']}^3 = {r['voxels']} voxels, {r['complex_rows']} complex rows "
            f"(A = {2 * r['complex_rows']} x {r['voxels']} float32, {r['matrix_bytes'] * mb:.0f} MiB), "
            f"{r['frames']} frames, lambda_abs {r['lambda_abs']:.3g}; problem built in {r['problem_build_s']:.0f} s",
            f"{'method':<36} {'frames/s':>10} {'set-up s':>9} {'cached s':>9} {'end-to-end fps':>15} "
            f"{'x f64 base':>10} {'x f32 base':>10} {'peak MiB':>9}",
        ]
        for name, row in t.items():
            n = row.get("frames_timed", r["frames"])
            e2e = n / (n / row["fps"] + row["setup_s"])
            cached = row.get("setup_cached_s")
            lines.append(
                f"{name:<36} {row['fps']:>10.1f} {row['setup_s']:>9.1f} "
                f"{'' if cached is None else f'{cached:.1f}':>9} {e2e:>15.2f} "
                f"{(r['operator_fps_beside_float64'] if name == 'operator' else row['fps']) / base64['fps']:>10.2f} "
                f"{row['fps'] / base32['fps']:>10.2f} {row['peak_bytes'] * mb:>9.0f}"
            )
        lines.append(
            "iron per organ (ng; frames averaged): images by plain organ-mask sums (linear, no clamp except "
            "the CLI default); region functionals by the GTM estimator of quantify"
        )
        lines.append(f"  {'organ':<12} {'known':>9} {'ideal img':>10} " + " ".join(f"{k[:14]:>14}" for k in t))
        for i, organ in enumerate(r["organs"]):
            lines.append(
                f"  {organ:<12} {r['known_iron_ng'][i]:>9.1f} {r['ideal_image_iron_ng'][i]:>10.1f} "
                + " ".join(f"{row['iron_ng'][i]:>14.1f}" for row in t.values())
            )
        op, fn = t["operator"], t["region functionals"]
        lines += [
            f"operator vs float64 dense Tikhonov: max |dx| / max |x| = {r['operator_vs_float64_dense_max_rel_diff']:.2e}",
            f"verdicts: operator {op['fps']:.1f} frames/s (live target {LIVE_TARGET_FPS}: "
            f"{'met' if op['fps'] >= LIVE_TARGET_FPS else 'NOT met'}); region functionals {fn['fps']:.0f} frames/s "
            f"(target {FUNCTIONALS_TARGET_FPS:.0f}: {'met' if fn['fps'] >= FUNCTIONALS_TARGET_FPS else 'NOT met'}); "
            f"operator / float64 baseline {r['operator_fps_beside_float64'] / base64['fps']:.2f}x "
            f"(operator {r['operator_fps_beside_float64']:.1f} frames/s in those rounds), / float32 baseline "
            f"{op['fps'] / base32['fps']:.2f}x (target >= {BASELINE_RATIO_TARGET}x at 5,000 rows)",
            "",
        ]
    lines.append(
        "frames/s = median of the repeats, set-up excluded; set-up s = the whole set-up (operator: Gram + Cholesky "
        "+ solves; functionals: that + W K^T); cached s = loading the operator from disk instead; end-to-end fps "
        "= frames of one run / (their time + the whole set-up); x base = frames/s ratio to the baseline, timed round robin with it (the operator against float64: "
        "its rate in the float64 rounds)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recon bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="19^3 voxels, 500 and 1000 rows (a smoke run)")
    parser.add_argument("--grid", type=int, default=None)
    parser.add_argument("--rows", default=None, help="comma-separated complex row counts (default 2000,5000)")
    parser.add_argument("--frames", type=int, default=64, help="frames per timed block")
    parser.add_argument("--kaczmarz-frames", type=int, default=16, help="frames timed for the CLI default")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median; at least 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    grid = args.grid if args.grid is not None else (19 if args.quick else 37)
    rows_text = args.rows if args.rows is not None else ("500,1000" if args.quick else "2000,5000")
    try:
        rows = [int(v) for v in rows_text.split(",")]
    except ValueError:
        parser.error(f"--rows takes comma-separated whole numbers, got {rows_text!r}")
    if args.repeats < 3:
        parser.error("--repeats must be >= 3 (the verdicts are medians)")
    if min([grid, args.frames, args.kaczmarz_frames, *rows]) < 1:
        parser.error("grid, rows and frames must be >= 1")
    results = []
    for r in rows:
        # Each size is reported as soon as it is done (a 5,000-row run takes minutes).
        start_load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        results.append(run_rows(grid, r, args.frames, args.repeats, args.seed, args.kaczmarz_frames))
        load = f"{start_load} at the start, {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end (1, 5, 15 min)"
        print(format_report(results[-1:], load), flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"results": results}, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
