"""3D at real size in bounded memory: a 19³ calibration with ≥ 30,000 candidate rows, default reconstruction.

    nice -n 10 .venv/bin/python benchmarks/recon_3d.py [--keep DIR]

1. Builds, in a temporary folder, a calibration MDF like the issue's: 19³ voxels,
   3 receive channels, the Bruker 3D dividers 102/96/99 (53,856 samples per
   period, 26,929 frequencies), complex64, fast frame axis (J × C × K × N, whole
   rows per chunk), 6 empty-bore frames, ``/calibration/snr`` = mean |S − bg| /
   noise SD per row (as :func:`recon.simulate.calibration_snr`). The physics is
   :mod:`recon.physics` (equilibrium Langevin particles, one point per voxel);
   it is simulated voxel chunk by voxel chunk into a scratch memmap, then
   written frequency block by frequency block, so building never holds the
   4.4 GB matrix. A frequency-domain scan (8 frames of the 3D mouse phantom +
   2 background frames, noise at the calibration's noise level) is written beside it.
2. Runs ``python -m recon reconstruct`` with the CLI defaults (no ``--max-rows``)
   in a child process that first warms the numba kernels on a tiny problem, and
   prints from inside it: rows used, candidates, the row budget, time, the peak
   resident memory (VmHWM) and its growth over the warm resident size before the
   reconstruction, against 2 × the float32 matrix of the rows used (the bound).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRID = (19, 19, 19)
DIVIDERS = (102, 96, 99)
BACKGROUND_FRAMES = 6
SCAN_FRAMES, SCAN_BACKGROUND_FRAMES = 8, 2
VOXEL_CHUNK = 48
FREQ_BLOCK = 512

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from recon import solvers

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0

# warm what the measured part would otherwise load: the numba kernels of both
# Kaczmarz forms (compiled or read from cache), h5py and the MDF reader
for shape in ((40, 30), (30, 40)):
    a = np.random.default_rng(0).random(shape).astype(np.float32)
    solvers.Kaczmarz(a, 1e-3).solve(a @ np.ones(shape[1], np.float32), 2)
import recon.mdf
from recon.params import ReconParams
from recon.pipeline import reconstruct_file
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
before = status("VmRSS")
t = time.perf_counter()
r = reconstruct_file({sm!r}, {meas!r}, {out!r}, ReconParams())
elapsed = time.perf_counter() - t
peak = status("VmHWM")
sel = r.selection
print(json.dumps({{"seconds": elapsed, "rss_before": before, "rss_peak": peak, "rows": sel["num_rows"],
                  "candidates": sel["candidates"], "budget": sel["budget"], "voxels": int(np.prod(r.size)),
                  "timings_s": r.timings_s, "frames": r.num_frames,
                  "max_concentration": float(r.concentration_mol_per_l.max())}}))
"""


def build_files(folder: Path, grid=GRID, dividers=DIVIDERS, seed: int = 0) -> dict:
    from recon import phantoms
    from recon.mdf import write_mdf
    from recon.physics import (
        Particles,
        grid_centres_m,
        induced_voltage,
        iron_mass_to_magnetite_volume_m3,
        voltage_to_spectrum,
    )
    from recon.simulate import (
        DEFAULT_CALIBRATION_AVERAGES,
        DEFAULT_DELTA_CONCENTRATION_MOL_PER_L,
        DEFAULT_NOISE_STD_V,
        IRON_MOLAR_MASS_G_PER_MOL,
        _acquisition_fields,
        _tracer_fields,
        scanner_background_spectrum,
        scanner_preset,
        system_matrix_geometry,
    )

    rng = np.random.default_rng(seed)
    scanner = dataclasses.replace(scanner_preset(3), dividers=tuple(dividers), oversampling=1)
    particles = Particles()
    c, k, v = scanner.num_receive_channels, scanner.num_frequencies, scanner.num_sampling_points
    fov, center = system_matrix_geometry(scanner, grid)
    centres = grid_centres_m(grid, fov, center)
    p = centres.shape[0]
    voxel_l = float(np.prod(fov / np.asarray(grid))) * 1e3
    iron_kg = DEFAULT_DELTA_CONCENTRATION_MOL_PER_L * voxel_l * IRON_MOLAR_MASS_G_PER_MOL * 1e-3
    w = float(iron_mass_to_magnetite_volume_m3(iron_kg))

    # Pass 1: physics per voxel chunk into a frame-major scratch memmap (P, C, K).
    t = time.perf_counter()
    scratch = np.lib.format.open_memmap(folder / "scratch.npy", mode="w+", dtype=np.complex64, shape=(p, c, k))
    for start in range(0, p, VOXEL_CHUNK):
        stop = min(start + VOXEL_CHUNK, p)
        n = stop - start
        volt = induced_voltage(scanner, particles, centres[start:stop], np.full(n, w), np.arange(n), n)
        scratch[start:stop] = voltage_to_spectrum(volt, scanner)
    scratch.flush()
    simulate_s = time.perf_counter() - t

    # The scan's truth: the 3D mouse phantom on the calibration grid.
    inclusions = phantoms.mouse(fov, dims=3)
    raster = phantoms.rasterise(inclusions, grid, fov, center, factor=1, dims=3)
    x_true = phantoms.iron_image_mol_per_l(raster, grid, fov, center) / DEFAULT_DELTA_CONCENTRATION_MOL_PER_L

    # Pass 2: frequency blocks -> calibration rows (+ background, noise), SNR, scan spectra.
    background = scanner_background_spectrum(scanner, rng, DEFAULT_NOISE_STD_V)  # (C, K)
    sigma_cal = DEFAULT_NOISE_STD_V * math.sqrt(v / 2) / math.sqrt(DEFAULT_CALIBRATION_AVERAGES)
    sigma_scan = DEFAULT_NOISE_STD_V * math.sqrt(v / 2)
    n_scan = SCAN_FRAMES + SCAN_BACKGROUND_FRAMES
    is_bg_scan = np.zeros(n_scan, dtype=bool)
    is_bg_scan[[0, n_scan - 1]] = True
    scan = np.empty((n_scan, 1, c, k), dtype=np.complex64)
    snr = np.empty((1, c, k))
    sm_path, meas_path = folder / "calibration.mdf", folder / "scan.mdf"
    fields = _acquisition_fields(scanner, p + BACKGROUND_FRAMES, DEFAULT_CALIBRATION_AVERAGES)
    fields.update(_tracer_fields(DEFAULT_DELTA_CONCENTRATION_MOL_PER_L))
    flags = {
        "/measurement/isBackgroundCorrected": False,
        "/measurement/isFourierTransformed": True,
        "/measurement/isFramePermutation": False,
        "/measurement/isFrequencySelection": False,
        "/measurement/isSparsityTransformed": False,
        "/measurement/isSpectralLeakageCorrected": False,
        "/measurement/isTransferFunctionCorrected": False,
    }
    fields.update(flags)
    fields.update(
        {
            "/experiment/name": "recon_3d benchmark calibration",
            "/measurement/data": None,  # written below, block by block
            "/measurement/isFastFrameAxis": True,
            "/measurement/isBackgroundFrame": np.concatenate([np.zeros(p, bool), np.ones(BACKGROUND_FRAMES, bool)]),
            "/calibration/method": "simulation",
            "/calibration/size": np.asarray(grid, dtype=np.int64),
            "/calibration/fieldOfView": np.asarray(fov, dtype=np.float64),
            "/calibration/fieldOfViewCenter": np.asarray(center, dtype=np.float64),
            "/calibration/deltaSampleSize": fov / np.asarray(grid),
            "/calibration/order": "xyz",
            "/calibration/snr": np.zeros((1, c, k)),
        }
    )
    write_mdf(sm_path, fields)
    t = time.perf_counter()
    with h5py.File(sm_path, "r+") as h5:
        ds = h5.create_dataset(
            "/measurement/data",
            shape=(1, c, k, p + BACKGROUND_FRAMES),
            dtype=np.complex64,
            chunks=(1, 1, 16, p + BACKGROUND_FRAMES),
        )
        for ch in range(c):
            for k0 in range(0, k, FREQ_BLOCK):
                k1 = min(k0 + FREQ_BLOCK, k)
                rows = np.asarray(scratch[:, ch, k0:k1]).T.astype(np.complex128)  # (kb, P)
                scan[:, 0, ch, k0:k1] = (rows @ x_true)[None, :] * (~is_bg_scan)[:, None]
                rows += background[ch, k0:k1, None]
                rows += sigma_cal * (rng.standard_normal(rows.shape) + 1j * rng.standard_normal(rows.shape))
                bg = background[ch, k0:k1, None] + sigma_cal * (
                    rng.standard_normal((k1 - k0, BACKGROUND_FRAMES))
                    + 1j * rng.standard_normal((k1 - k0, BACKGROUND_FRAMES))
                )
                bg_mean = bg.mean(axis=1, keepdims=True)
                noise = np.sqrt(np.mean(np.abs(bg - bg_mean) ** 2, axis=1))
                snr[0, ch, k0:k1] = np.mean(np.abs(rows - bg_mean), axis=1) / np.maximum(noise, 1e-300)
                ds[0, ch, k0:k1] = np.concatenate([rows, bg], axis=1).astype(np.complex64)
        h5["/calibration/snr"][...] = snr
    write_s = time.perf_counter() - t
    del scratch
    os.remove(folder / "scratch.npy")

    scan += background[None, None].astype(np.complex64)
    scan += (sigma_scan * (rng.standard_normal(scan.shape) + 1j * rng.standard_normal(scan.shape))).astype(np.complex64)
    mfields = _acquisition_fields(scanner, n_scan, 1)
    mfields.update(flags)
    mfields.update(
        {
            "/experiment/name": "recon_3d benchmark scan",
            "/measurement/data": scan,
            "/measurement/isFastFrameAxis": False,
            "/measurement/isBackgroundFrame": is_bg_scan,
        }
    )
    write_mdf(meas_path, mfields)
    band = scanner.frequencies_hz >= 80e3
    return {
        "system_matrix": str(sm_path),
        "measurement": str(meas_path),
        "calibration_bytes": os.path.getsize(sm_path),
        "rows_total": c * k,
        "rows_in_band_snr_ge_3": int(np.sum((snr[0] >= 3.0) & band[None, :])),
        "simulate_s": simulate_s,
        "write_s": write_s,
        "frequencies": k,
        "true_iron_ng": float(sum(inc.iron_ng for inc in inclusions)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", default=None, help="build the files here and keep them; a later run reuses them (default: a temp dir)"
    )
    parser.add_argument("--grid", type=int, default=GRID[0], help="voxels per axis (default 19)")
    parser.add_argument(
        "--dividers", default=",".join(map(str, DIVIDERS)), help="drive dividers (smoke runs: 17,16,15)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recon3d-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        grid = (args.grid,) * 3
        kept = folder / "files.json"
        if args.keep and kept.exists():  # files built by an earlier run with --keep
            files = json.loads(kept.read_text())
        else:
            files = build_files(folder, grid, [int(d) for d in args.dividers.split(",")])
            kept.write_text(json.dumps(files))
        build_s = time.perf_counter() - t
        code = CHILD.format(
            root=str(ROOT), sm=files["system_matrix"], meas=files["measurement"], out=str(folder / "recon.mdf")
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    matrix32 = 8 * r["voxels"] * r["rows"]  # float32 [Re; Im] of the rows used
    growth = r["rss_peak"] - r["rss_before"]
    mib = 2**20
    lines = [
        f"calibration: {grid[0]}x{grid[1]}x{grid[2]} voxels, 3 channels, {files['frequencies']} frequencies, "
        f"{files['calibration_bytes'] / 2**30:.2f} GiB complex64; {files['rows_total']} rows, "
        f"{files['rows_in_band_snr_ge_3']} in band with SNR >= 3 (built in {build_s:.0f} s: "
        f"physics {files['simulate_s']:.0f} s, writing {files['write_s']:.0f} s)",
        f"default reconstruction (CLI defaults, no --max-rows): {r['rows']} rows used of {r['candidates']} candidates, "
        f"{r['frames']} frames, {r['seconds']:.1f} s (timings {json.dumps({k: round(v, 1) for k, v in r['timings_s'].items()})})",
        f"row budget: {json.dumps(r['budget'])}",
        f"float32 matrix of the rows used: {matrix32 / mib:.0f} MiB; bound 2x = {2 * matrix32 / mib:.0f} MiB",
        f"peak RSS of the reconstruction process: {r['rss_peak'] / mib:.0f} MiB (warm interpreter before: "
        f"{r['rss_before'] / mib:.0f} MiB); growth during the reconstruction {growth / mib:.0f} MiB = "
        f"{growth / matrix32:.2f}x the float32 matrix ({'within' if growth <= 2 * matrix32 else 'OVER'} the 2x bound)",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
