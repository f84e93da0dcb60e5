"""Benchmark (not a test): frames per second of ``recon.live.LiveEngine.push`` on one core.

    nice -n 10 .venv/bin/python benchmarks/live_engine.py [--grid 37] [--rows 2000] [--repeats 5]

Two problems:

- 2D: the simulated injection stream of ``recon.live_simulate`` (Bruker-like 2D
  scanner, 2 channels x 1,632 samples, 20 x 20 grid), engine from ``LiveEngine.build``
  (all rows the default plan selects);
- 3D: ``grid``³ voxels (default 37³ = 50,653) and ``rows`` complex rows (default 2,000)
  of the small-divider 3D scanner of ``recon.simulate.scanner_preset(3)`` (3 channels x
  4,080 samples), A built from the physics as ``recon.bench.build_problem`` does, the
  operator built from it, the region functionals of the 3D mouse's organs
  (``recon.bench.region_functionals``: the GTM estimator with exact spread), the engine
  assembled from them (a 37³ calibration MDF with every frequency would be 5 GB; the
  per-frame path is the same code: ``push`` never touches the P-sized operator).

For each: ``push`` of blocks of 23 frames (0.5 s of the 46.4 frames/s 3D Bruker rate)
and of single frames, against the named baseline "per-frame full reconstruction with the
operator" (rfft, rows, x = y K for every frame, then region sums W x), all on the same
time-domain frames; every figure is the median of ``--repeats`` timed runs. BLAS and
numba are held to one thread (the live worker's share of a 2-core server).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must precede numpy's import
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_FPS = 46.4
BLOCK = 23


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_engine(engine, frames: np.ndarray, region_weights_ng: np.ndarray, repeats: int) -> dict:
    """frames/s of push in blocks, push per frame, and the baseline; ms of image(last=5)."""
    n = frames.shape[0]
    bg = np.zeros(n, dtype=bool)
    state = engine.state()

    def blocks():
        engine.restore(state)
        for i in range(0, n, BLOCK):
            engine.push(frames[i : i + BLOCK], bg[i : i + BLOCK])

    def single():
        engine.restore(state)
        for i in range(min(n, 4 * BLOCK)):
            engine.push(frames[i : i + 1], bg[i : i + 1])

    op = engine.operator
    sel = engine.selection

    def baseline():
        for i in range(min(n, 2 * BLOCK)):
            spec = np.fft.rfft(frames[i, 0].astype(np.float64), axis=-1)
            d = (spec[sel.channel, sel.frequency] - engine._ref) * engine._weights
            y = np.concatenate([d.real, d.imag])[None, :].astype(op.matrix.dtype)
            x = op.apply(y)[0]
            region_weights_ng @ x.astype(np.float64)

    blocks()  # warm
    t_blocks = _median_time(blocks, repeats)
    t_single = _median_time(single, repeats)
    t_base = _median_time(baseline, repeats)
    t_image = _median_time(lambda: engine.image(last=5), repeats)
    return {
        "push_block_fps": n / t_blocks,
        "push_single_fps": min(n, 4 * BLOCK) / t_single,
        "baseline_fps": min(n, 2 * BLOCK) / t_base,
        "image_ms": 1e3 * t_image,
        "rows": sel.num_rows,
        "regions": len(engine.region_names),
        "frame_shape": list(engine.layout.frame_shape),
        "voxels": int(np.prod(engine.size)),
    }


def run_2d(repeats: int, frames: int) -> dict:
    import h5py

    from recon.live import LiveEngine, StreamLayout
    from recon.live_simulate import simulate_injection_stream, stream_fields_from_mdf

    with tempfile.TemporaryDirectory() as tmp:
        out = simulate_injection_stream(tmp, dims=2, num_frames=frames, background_frames=(10, 0))
        with h5py.File(out["stream"], "r") as h5:
            data = h5["/measurement/data"][()]
        layout = StreamLayout.from_fields(stream_fields_from_mdf(out["stream"]), str(data.dtype))
        t = time.perf_counter()
        engine = LiveEngine.build(out["calibration"], layout, out["roi_records"])
        build_s = time.perf_counter() - t
        engine.push(data[:10], np.ones(10, dtype=bool))
        # the baseline's region sums: an (R, P) weight matrix (its cost is timed, its values unused)
        weights = np.ones((len(engine.region_names), int(np.prod(engine.size))))
        res = _time_engine(engine, data[10:], weights, repeats)
    return {"problem": "2D stream", "build_s": build_s, **res}


def run_3d(grid: int, rows: int, repeats: int, frames: int) -> dict:
    from recon import solvers
    from recon.bench import build_problem, organ_masks, region_functionals
    from recon.live import LiveEngine, StreamLayout
    from recon.operator import ReconOperator
    from recon.params import ReconParams
    from recon.physics import Particles
    from recon.preprocess import RowSelection
    from recon.simulate import scanner_background_spectrum, scanner_preset, simulate_system_matrix

    t = time.perf_counter()
    a, _, _, info = build_problem(grid, rows, 4, seed=0)
    # the rows build_problem chose (same seed, same code path)
    scanner = dataclasses.replace(scanner_preset(3), oversampling=1)
    rng = np.random.default_rng(0)
    coarse = simulate_system_matrix(scanner, Particles(), (10, 10, 10), rng=rng, delta_subsamples=1)
    snr = coarse.snr.copy()
    snr[:, scanner.frequencies_hz < 80e3] = 0
    flat = np.sort(np.argsort(snr.ravel())[::-1][:rows])
    ch, fr = np.unravel_index(flat, snr.shape)
    problem_s = time.perf_counter() - t
    lam = solvers.absolute_lambda(a, ReconParams().lambda_)
    names, masks, _ = organ_masks(info)
    t = time.perf_counter()
    op = ReconOperator.build(a, lam)
    funcs = region_functionals(op, a, masks, names, info)
    build_s = time.perf_counter() - t
    del a
    fields = {
        "/acquisition/drivefield/baseFrequency": scanner.base_frequency_hz,
        "/acquisition/drivefield/divider": [[int(d)] for d in scanner.dividers],
        "/acquisition/numAverages": 1,
        "/acquisition/numPeriodsPerFrame": 1,
        "/acquisition/receiver/numChannels": scanner.num_receive_channels,
        "/acquisition/receiver/numSamplingPoints": scanner.num_sampling_points,
        "/acquisition/receiver/bandwidth": scanner.bandwidth_hz,
    }
    layout = StreamLayout.from_fields(fields, "int16")
    selection = RowSelection(ch.astype(np.int64), fr.astype(np.int64), scanner.frequencies_hz[fr], snr[ch, fr], rows)
    engine = LiveEngine(
        layout=layout,
        params=ReconParams(solver="fast", max_rows=rows),
        operator=op,
        functionals=funcs.transposed.astype(np.float64),
        selection=selection,
        row_weights=np.ones(rows),
        reference_rows=np.zeros(rows, dtype=np.complex128),
        calibration_noise_sd=np.ones(len(names)),
        region_names=names,
        region_kinds=["target"] + ["other"] * (len(names) - 1),
        size=(grid, grid, grid),
        ng_per_unit=1.0,
        fingerprint="bench",
        notes=[],
    )
    bg_spec = scanner_background_spectrum(scanner, rng, 2e-10)
    volts = np.fft.irfft(bg_spec, n=scanner.num_sampling_points, axis=-1)
    noise = 2e-10 * rng.standard_normal((frames, 1, scanner.num_receive_channels, scanner.num_sampling_points))
    scale = float(np.abs(volts).max() + 6e-10) / 30000.0
    data = np.round((volts[None, None] + noise) / scale).astype(np.int16)
    res = _time_engine(engine, data, masks, repeats)
    return {"problem": f"3D {grid}^3", "problem_s": problem_s, "build_s": build_s, **res}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=37)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--frames", type=int, default=230)
    p.add_argument("--skip-3d", action="store_true")
    args = p.parse_args(argv)
    if args.grid < 2 or args.rows < 1 or args.repeats < 3 or args.frames < BLOCK:
        p.error("need --grid >= 2, --rows >= 1, --repeats >= 3, --frames >= 23")
    results = [run_2d(args.repeats, args.frames)]
    if not args.skip_3d:
        results.append(run_3d(args.grid, args.rows, args.repeats, args.frames))
    print(
        f"{'problem':<12} {'rows':>6} {'voxels':>7} {'push fps (blocks of 23)':>24} {'push fps (1 frame)':>19} "
        f"{'baseline fps':>13} {'x baseline':>10} {'x 46.4':>7} {'image ms':>9}"
    )
    for r in results:
        print(
            f"{r['problem']:<12} {r['rows']:>6} {r['voxels']:>7} {r['push_block_fps']:>24.0f} "
            f"{r['push_single_fps']:>19.0f} {r['baseline_fps']:>13.1f} "
            f"{r['push_block_fps'] / r['baseline_fps']:>10.1f} {r['push_block_fps'] / TARGET_FPS:>7.0f} "
            f"{r['image_ms']:>9.1f}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
