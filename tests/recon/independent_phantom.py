"""A second MPI simulator, written apart from ``recon.simulate``, for accuracy checks
without an inverse crime (test-only; ``benchmarks/accuracy.py`` imports it).

What differs from ``recon.simulate`` (so the reconstruction never inverts its own model):

- particle model: a log-normal distribution of core diameters (median 24 nm,
  σ_ln = 0.15, 9-node Gauss–Hermite quadrature weighted by volume) instead of one
  25 nm core, and a first-order (Debye) relaxation of the magnetisation with
  τ = 0.5 µs, applied as 1 / (1 + iωτ) (Néel/Brown relaxation in its simplest
  form; Croft, Goodwill & Conolly, IEEE TMI 2012, "Relaxation in x-space MPI");
- field: 14 mT drive (2D) with a 1.2 T/m in-plane gradient (recon.simulate: 12 mT,
  1 T/m) and the signal computed in numpy by spectral differentiation of the mean
  magnetisation on a 4× oversampled period (recon.simulate: analytic derivative in
  a numba kernel, 2× oversampling);
- grids: the ground truth is sampled ``truth_factor`` (default 5) times finer per
  imaged axis than the system-matrix grid, and each inclusion's iron is spread
  uniformly over its sub-samples (exact truth); the delta sample of the calibration
  is a uniform voxel-sized cube sampled by 3 points per imaged axis;
- background: the scan's background drifts non-linearly in time (quadratic
  amplitude drift + linear phase drift) on top of harmonic distortion and a
  broadband floor, plus white receiver noise per sample; background frames sit
  before and after the foreground frames, so linear interpolation leaves a residue.

Everything random derives from ``seed``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from recon.physics import Scanner
from recon.pipeline import reconstruct_file
from recon.quantify import quantify_file
from recon.simulate import SimulatedScan, SimulatedSystemMatrix, write_scan_mdf, write_system_matrix_mdf

MU0 = 4e-7 * math.pi
KB = 1.380649e-23
FE_MOLAR_MASS = 55.845
MAGNETITE_FE_FRACTION = 3 * 55.845 / 231.533
MAGNETITE_DENSITY = 5170.0  # kg/m³
SATURATION_A_PER_M = 4.8e5
TEMPERATURE_K = 310.0
DELTA_CONCENTRATION = 0.05  # mol Fe / L in the calibration's delta sample
#: Full-dose iron per inclusion (ng); the low dose is this / 30.
FULL_DOSE_NG = {"target": 2000.0, "lung_left": 300.0, "lung_right": 300.0, "liver": 1200.0, "spleen": 400.0}


@dataclass(frozen=True)
class Particles:
    """Log-normal core diameters with Debye relaxation."""

    median_diameter_m: float = 24e-9
    sigma_ln: float = 0.15
    relaxation_s: float = 0.5e-6
    nodes: int = 9

    def ensemble(self) -> tuple[np.ndarray, np.ndarray]:
        """(β per node (1/T), volume weight per node) — β = m/(kT), weights sum to 1."""
        x, w = np.polynomial.hermite_e.hermegauss(self.nodes)
        d = self.median_diameter_m * np.exp(self.sigma_ln * x)
        vol = math.pi * d**3 / 6
        weight = w * vol
        weight /= weight.sum()
        beta = SATURATION_A_PER_M * vol / (KB * TEMPERATURE_K)
        return beta, weight


def scanner(dims: int, fast: bool = False) -> Scanner:
    """The acquisition (also written into the files' metadata)."""
    if dims == 2:
        return Scanner(
            gradient_t_per_m=(-1.2, -1.2, 2.4),
            drive_amplitude_t=(14e-3, 14e-3),
            dividers=(51, 48) if fast else (102, 96),
        )
    if dims == 3:
        return Scanner(
            gradient_t_per_m=(-1.2, -1.2, 2.4),
            drive_amplitude_t=(14e-3, 14e-3, 28e-3),
            dividers=(17, 16, 15),
            coil_sensitivity_t_per_a=(1.0, 1.0, 1.0),
        )
    raise ValueError(f"dims must be 2 or 3, got {dims}")


OVERSAMPLING = 4


def spectra(sc: Scanner, particles: Particles, positions_m: np.ndarray, magnetite_m3: np.ndarray) -> np.ndarray:
    """(C, K) complex receive spectrum (unnormalised rfft of the V samples) of point samples."""
    v = sc.num_sampling_points
    t_n = v * OVERSAMPLING
    t = np.arange(t_n) / (sc.base_frequency_hz * OVERSAMPLING)
    d = len(sc.dividers)
    drive = np.zeros((t_n, 3))
    for a in range(d):
        f = sc.base_frequency_hz / sc.dividers[a]
        drive[:, a] = sc.drive_amplitude_t[a] * np.sin(2 * math.pi * f * t)
    grad = np.asarray(sc.gradient_t_per_m)
    beta, weight = particles.ensemble()
    m_total = np.zeros((t_n, 3))
    for start in range(0, positions_m.shape[0], 128):
        pos = positions_m[start : start + 128]
        vols = magnetite_m3[start : start + 128]
        b = grad[None, None, :] * pos[:, None, :] - drive[None, :, :]  # (n, T, 3) tesla
        norm = np.linalg.norm(b, axis=-1)
        norm = np.maximum(norm, 1e-15)
        mag = np.zeros_like(norm)
        for bk, wk in zip(beta, weight, strict=True):
            xi = bk * norm
            small = xi < 1e-4
            lang = np.where(small, xi / 3, 1 / np.tanh(np.where(small, 1, xi)) - 1 / np.where(small, 1, xi))
            mag += wk * lang
        m_total += np.einsum("n,nt,ntc->tc", vols * SATURATION_A_PER_M, mag / norm, b)
    k = v // 2 + 1
    spec = np.fft.rfft(m_total, axis=0)[:k] / OVERSAMPLING  # (K, 3)
    omega = 2 * math.pi * np.arange(k) * sc.base_frequency_hz / v
    deriv = -1j * omega[:, None] * MU0 * spec / (1 + 1j * omega[:, None] * particles.relaxation_s)
    coils = np.asarray(sc.coil_sensitivity_t_per_a)
    return (deriv[:, : len(coils)] * coils[None, :]).T.copy()


def _magnetite_m3(iron_ng: np.ndarray) -> np.ndarray:
    return np.asarray(iron_ng) * 1e-12 / MAGNETITE_FE_FRACTION / MAGNETITE_DENSITY


def _centres(size, fov, center) -> np.ndarray:
    axes = [center[a] - fov[a] / 2 + (np.arange(size[a]) + 0.5) * fov[a] / size[a] for a in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)


def geometry(sc: Scanner, size) -> tuple[np.ndarray, np.ndarray]:
    fov = np.zeros(3)
    for a in range(3):
        fov[a] = 2 * sc.drive_amplitude_t[a] / abs(sc.gradient_t_per_m[a]) if a < len(sc.dividers) else 1e-3
    return fov, np.zeros(3)


def inclusions(fov: np.ndarray, dims: int) -> list[dict]:
    """Target, two lungs, liver and spleen, as ROI records (name, kind, shape, centre, size)."""
    fx, fy = fov[0], fov[1]
    fz = fov[2] if dims == 3 else 1e-3
    zc = 0.0

    def ell(name, kind, c, s):
        return {"name": name, "kind": kind, "shape": "ellipsoid", "center_m": list(c), "semi_axes_m": list(s)}

    return [
        {
            "name": "target",
            "kind": "target",
            "shape": "sphere",
            "center_m": [0.02 * fx, 0.2 * fy, zc],
            "radius_m": 0.11 * fx,
        },
        ell("lung_left", "lungs", (-0.3 * fx, 0.18 * fy, zc), (0.09 * fx, 0.17 * fy, 0.2 * fz)),
        ell("lung_right", "lungs", (0.33 * fx, 0.16 * fy, zc), (0.09 * fx, 0.16 * fy, 0.2 * fz)),
        ell("liver", "liver", (-0.05 * fx, -0.24 * fy, zc), (0.26 * fx, 0.11 * fy, 0.22 * fz)),
        {
            "name": "spleen",
            "kind": "spleen",
            "shape": "sphere",
            "center_m": [0.3 * fx, -0.3 * fy, zc],
            "radius_m": 0.07 * fx,
        },
    ]


def _inside(rec: dict, pts: np.ndarray, dims: int) -> np.ndarray:
    c = np.asarray(rec["center_m"])
    s = np.full(3, rec["radius_m"]) if rec["shape"] == "sphere" else np.asarray(rec["semi_axes_m"])
    d = (pts - c) / s
    if dims < 3:
        d[:, 2] = 0.0
    return np.sum(d**2, axis=1) <= 1.0


def simulate(
    output_dir: str | os.PathLike,
    *,
    dims: int = 2,
    size: tuple[int, int, int] | None = None,
    dose: float = 1.0,
    seed: int = 0,
    frames: int = 40,
    background_frames: tuple[int, int] = (10, 10),
    noise_std_v: float = 2e-10,
    truth_factor: int | None = None,
    fast: bool = False,
    calibration: str | None = None,
) -> dict:
    """Write ``system_matrix.mdf`` (unless ``calibration`` names one to reuse),
    ``measurement.mdf`` and ``rois.json``; return paths, truth {name: ng} and kinds.

    dose : fraction of :data:`FULL_DOSE_NG` in every inclusion (1/30 = low dose).
    """
    out = os.fspath(output_dir)
    os.makedirs(out, exist_ok=True)
    sc = scanner(dims, fast)
    particles = Particles()
    grid: tuple[int, int, int] = (
        (int(size[0]), int(size[1]), int(size[2])) if size is not None else ((16, 16, 1) if dims == 2 else (10, 10, 10))
    )
    size = grid
    factor = truth_factor if truth_factor is not None else (5 if dims == 2 else 3)
    fov, center = geometry(sc, size)
    rng = np.random.default_rng(seed)
    c, v = sc.num_receive_channels, sc.num_sampling_points
    k = v // 2 + 1
    # Scanner background shared by calibration and scan: harmonic distortion of the drive
    # chain on every channel plus a broadband floor.
    bg_rng = np.random.default_rng(10_000 + dims)
    b0 = 2.0 * noise_std_v * math.sqrt(v) * (bg_rng.standard_normal((c, k)) + 1j * bg_rng.standard_normal((c, k)))
    for _a, div in enumerate(sc.dividers):
        for n in range(2, 16):
            if n * (v // div) < k:
                b0[:, n * (v // div)] += 30.0 * noise_std_v * v / n * np.exp(2j * math.pi * bg_rng.random(c))
    b0[:, 0] = 0
    sm_path = calibration or os.path.join(out, "system_matrix.mdf")
    if calibration is None:
        centres = _centres(size, fov, center)
        voxel = fov / np.asarray(size)
        offs1 = (np.arange(3) + 0.5) / 3 - 0.5
        grids = [offs1 if size[a] > 1 else np.zeros(1) for a in range(3)]
        offs = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3) * voxel
        iron_ng = DELTA_CONCENTRATION * float(np.prod(voxel)) * 1e3 * FE_MOLAR_MASS * 1e9
        vols = np.full(offs.shape[0], _magnetite_m3(iron_ng / offs.shape[0]))
        sm = np.stack([spectra(sc, particles, p + offs, vols) for p in centres], axis=-1)  # (C, K, P)
        sigma = noise_std_v * math.sqrt(v / 2) / math.sqrt(1000)
        sm = sm + b0[:, :, None] + sigma * (rng.standard_normal(sm.shape) + 1j * rng.standard_normal(sm.shape))
        e = 20
        bg = b0[:, :, None] + sigma * (rng.standard_normal((c, k, e)) + 1j * rng.standard_normal((c, k, e)))
        bg_mean = bg.mean(axis=-1, keepdims=True)
        noise = np.sqrt(np.mean(np.abs(bg - bg_mean) ** 2, axis=-1))
        snr = np.mean(np.abs(sm - bg_mean), axis=-1) / np.maximum(noise, 1e-300)
        write_system_matrix_mdf(
            sm_path,
            SimulatedSystemMatrix(sc, size, fov, center, DELTA_CONCENTRATION, sm, bg, snr, 1000),
        )
    # Ground truth on a finer grid.
    fine = tuple(int(s) * (factor if s > 1 else 1) for s in size)
    pts = _centres(fine, fov, center)
    records = inclusions(fov, dims)
    label = np.full(pts.shape[0], -1)
    for i, rec in enumerate(records):
        label[_inside(rec, pts, dims) & (label < 0)] = i
    truth = {}
    pos, iron = [], []
    for i, rec in enumerate(records):
        sel = pts[label == i]
        mass = FULL_DOSE_NG[rec["name"]] * dose
        truth[rec["name"]] = mass
        pos.append(sel)
        iron.append(np.full(sel.shape[0], mass / sel.shape[0]))
    particle_spec = spectra(sc, particles, np.concatenate(pos), _magnetite_m3(np.concatenate(iron)))
    n_before, n_after = background_frames
    n_total = n_before + frames + n_after
    is_bg = np.zeros(n_total, dtype=bool)
    is_bg[:n_before] = True
    is_bg[n_before + frames :] = True
    data = np.empty((n_total, 1, c, v), dtype=np.float32)
    for n in range(n_total):
        s = n / (n_total - 1)
        frame = b0 * (1 + 0.1 * s + 0.15 * s * s) * np.exp(1j * 0.2 * s)
        if not is_bg[n]:
            frame = frame + particle_spec
        data[n, 0] = np.fft.irfft(frame, n=v, axis=-1) + noise_std_v * rng.standard_normal((c, v))
    meas_path = os.path.join(out, "measurement.mdf")
    write_scan_mdf(meas_path, SimulatedScan(sc, data, is_bg, None, particle_spec))  # type: ignore[arg-type]  # no recon phantom here
    rois_path = os.path.join(out, "rois.json")
    with open(rois_path, "w", encoding="utf-8") as fh:
        json.dump({"rois": records}, fh, indent=2)
    return {
        "system_matrix": sm_path,
        "measurement": meas_path,
        "rois": rois_path,
        "truth": truth,
        "kinds": {r["name"]: r["kind"] for r in records},
        "dims": dims,
        "dose": dose,
        "seed": seed,
        "size": list(grid),
    }


# ---------------------------------------------------------------------------
# Accuracy cases: what benchmarks/accuracy.py tabulates and the fast test asserts
# ---------------------------------------------------------------------------

#: Issue #14 tolerances: relative error of ``quantify`` per region kind, by dose.
TOLERANCE = {
    "full": {"target": 0.05, "lungs": 0.10, "liver": 0.10},
    "low": {"target": 0.10, "lungs": 0.20, "liver": 0.25},
}
DOSES = {"full": 1.0, "low": 1.0 / 30.0}
FRAMES = {2: 400, 3: 200}
#: The reported detection limit must match the measured one within this factor.
LOD_MATCH_FACTOR = 1.5


@dataclass
class Case:
    dims: int
    dose: str
    seed: int
    name: str
    kind: str
    truth_ng: float
    estimate_ng: float
    sd_ng: float
    lod_ng: float

    @property
    def error(self) -> float:
        return self.estimate_ng / self.truth_ng - 1 if self.truth_ng else float("nan")

    @property
    def tolerance(self) -> float | None:
        return TOLERANCE[self.dose].get(self.kind) if self.dose in TOLERANCE else None


def run(
    workdir: str, dims: int, dose: str, seed: int, *, calibration: str | None = None, **sim_options
) -> tuple[list[Case], str]:
    """Simulate, reconstruct with the CLI defaults, quantify with the CLI's estimator."""
    out = os.path.join(workdir, f"d{dims}_{dose}_{seed}")
    fraction = DOSES.get(dose, 0.0)
    info = simulate(out, dims=dims, dose=fraction, seed=seed, calibration=calibration, **sim_options)
    rec = os.path.join(out, "reconstruction.mdf")
    reconstruct_file(info["system_matrix"], info["measurement"], rec)
    result = quantify_file(rec, info["rois"], system_matrix_path=info["system_matrix"])
    cases = [
        Case(
            dims,
            dose,
            seed,
            m.name,
            m.kind,
            info["truth"][m.name],
            m.iron_mass_ng,
            m.uncertainty_ng,
            m.detection_limit_ng,
        )
        for m in result.rois
    ]
    return cases, info["system_matrix"]


def detection_limits(cases: list[Case], blanks: list[Case]) -> dict[str, tuple[float, float]]:
    """{region: (reported LOD (mean over blank scans), measured LOD = 3.3 × SD of the blank estimates)}."""
    out = {}
    for name in sorted({c.name for c in blanks}):
        est = np.array([c.estimate_ng for c in blanks if c.name == name])
        rep = np.array([c.lod_ng for c in blanks if c.name == name])
        out[name] = (float(rep.mean()), float(3.3 * est.std(ddof=1)))
    return out
