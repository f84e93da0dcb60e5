"""Simulated calibrations (system matrices) and scans with known iron.

The system matrix is the spectrum of a delta sample of known concentration at
every grid voxel (x fastest), measured as the mean of 2^dims sub-positions
inside the voxel (a finite delta sample), with calibration noise and the
scanner background, plus background frames (sample removed) from which the
per-frequency SNR is computed the way real calibrations do it:
mean |signal| over voxels / standard deviation over background frames.

The scan of a phantom is simulated on a grid ``fine_factor`` times finer per
driven axis (sub-voxel centres), so a reconstruction never inverts the exact
forward model; it carries white receiver noise, a scanner background (drive
harmonic distortion lines and a broadband floor) that drifts slowly in
amplitude and phase over the scan, and background frames (empty bore) at the
start and end.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from recon import phantoms as _phantoms
from recon.physics import (
    IRON_MOLAR_MASS_G_PER_MOL,
    Particles,
    Scanner,
    grid_centres_m,
    iron_mass_to_magnetite_volume_m3,
    sample_spectra,
)

#: Receiver noise per time sample (V) for unit coil sensitivity: a 1 µg point
#: at the centre of the 2D Bruker-like scanner has an RMS voltage of ~2e-8 V,
#: so a single frame sees it at a broadband SNR of a few hundred.
DEFAULT_NOISE_STD_V = 2e-10
#: Calibrations average every position this many times (OpenMPIData: 1000).
DEFAULT_CALIBRATION_AVERAGES = 1000
#: Delta sample concentration (mol Fe / L): a 1.2 mm voxel holds ~4 µg Fe.
DEFAULT_DELTA_CONCENTRATION_MOL_PER_L = 0.05


def scanner_preset(dims: int, *, fast: bool = False) -> Scanner:
    """Scanners used by the simulator.

    dims=1: x only, divider 102. dims=2: Bruker 2D (dividers 102/96, 1632
    samples, gradient −1/−1/+2 T/m, 12 mT). dims=3: a small-divider 3D FFP
    scanner (dividers 17/16/15 → 4080 samples, drive 147–167 kHz, 12/12/24 mT
    so the field of view is a 24 mm cube with the Bruker gradient): the true
    Bruker 3D frame (53,856 samples) is too long for tests. Its fundamentals
    pass the 80 kHz cut and it has few harmonics below 1.25 MHz, so its
    resolution is coarser than a real scanner's (15/16/17-cycle variants with
    10 kHz drive lose the first eight harmonics to the cut and do worse). ``fast=True`` halves the 2D frame (dividers
    51/48, 816 samples, still 16/17 cycles).
    """
    if dims == 1:
        return Scanner(drive_amplitude_t=(12e-3,), dividers=(102,), coil_sensitivity_t_per_a=(1.0,))
    if dims == 2:
        if fast:
            return Scanner(drive_amplitude_t=(12e-3, 12e-3), dividers=(51, 48))
        return Scanner(drive_amplitude_t=(12e-3, 12e-3), dividers=(102, 96))
    if dims == 3:
        return Scanner(
            drive_amplitude_t=(12e-3, 12e-3, 24e-3),
            dividers=(17, 16, 15),
            coil_sensitivity_t_per_a=(1.0, 1.0, 1.0),
        )
    raise ValueError(f"dims must be 1, 2 or 3, got {dims}")


def default_grid(dims: int) -> tuple[int, int, int]:
    return {1: (24, 1, 1), 2: (20, 20, 1), 3: (15, 15, 15)}[dims]


def system_matrix_geometry(scanner: Scanner, size: tuple[int, int, int], slab_thickness_m: float = 1e-3):
    """(fov (3,), center (3,)) of a calibration grid covering the drive field of view.

    Undriven axes get a single slab of ``slab_thickness_m`` (2D: the imaged
    slice; iron per voxel = concentration × in-plane area × thickness).
    """
    fov = scanner.drive_field_of_view_m.copy()
    for axis in range(3):
        if fov[axis] == 0.0:
            if size[axis] != 1:
                raise ValueError(f"axis {axis} is not driven, so its grid size must be 1, got {size[axis]}")
            fov[axis] = slab_thickness_m
    return fov, np.zeros(3)


def scanner_background_spectrum(
    scanner: Scanner, rng: np.random.Generator, noise_std_v: float, level: float = 1.0
) -> np.ndarray:
    """(C, K) complex scanner background (unnormalised rfft units).

    Harmonic distortion of the drive chain at n·f_d (n = 2…12, time-domain
    amplitude 20·level·σ/n, random phase) on every channel, the direct
    feedthrough at the drive fundamentals (much larger) on the channel of that
    axis, and a constant broadband floor (3·level·σ·√V per bin). This is what
    background correction must remove: it sits on the particle harmonics.
    """
    c, k, v = scanner.num_receive_channels, scanner.num_frequencies, scanner.num_sampling_points
    spec = np.zeros((c, k), dtype=np.complex128)
    floor = 3.0 * level * noise_std_v * math.sqrt(v)
    spec += floor * (rng.standard_normal((c, k)) + 1j * rng.standard_normal((c, k))) / math.sqrt(2)
    for d, div in enumerate(scanner.dividers):
        base_bin = v // int(div)
        for ch in range(c):
            for n in range(1, 13):
                b = n * base_bin
                if b >= k:
                    break
                amp = (2000.0 if (n == 1 and ch == d) else 20.0 / n) * level * noise_std_v
                spec[ch, b] += amp * v / 2 * np.exp(2j * math.pi * rng.random())
    spec[:, 0] = 0.0
    return spec


@dataclass
class SimulatedSystemMatrix:
    """A simulated calibration.

    system_matrix : (C, K, P) complex128, foreground (delta sample at voxel p),
        scanner background included (as measured)
    background : (C, K, E) complex128, background frames (sample removed)
    snr : (C, K) float64
    """

    scanner: Scanner
    size: tuple[int, int, int]
    fov_m: np.ndarray
    center_m: np.ndarray
    delta_concentration_mol_per_l: float
    system_matrix: np.ndarray
    background: np.ndarray
    snr: np.ndarray
    num_averages: int
    frequency_index: np.ndarray | None = None


def calibration_snr(system_matrix: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-row SNR like real calibrations: mean over voxels of |S − mean(bg)| over
    the standard deviation of the background frames.

    system_matrix : (..., P) complex; background : (..., E) complex, E ≥ 2.
    """
    if background.shape[-1] < 2:
        raise ValueError(f"SNR needs at least 2 background frames, got {background.shape[-1]}")
    bg_mean = background.mean(axis=-1, keepdims=True)
    noise = np.sqrt(np.mean(np.abs(background - bg_mean) ** 2, axis=-1))
    signal = np.mean(np.abs(system_matrix - bg_mean), axis=-1)
    return signal / np.maximum(noise, np.finfo(np.float64).tiny)


def simulate_system_matrix(
    scanner: Scanner,
    particles: Particles,
    size: tuple[int, int, int],
    *,
    rng: np.random.Generator,
    delta_concentration_mol_per_l: float = DEFAULT_DELTA_CONCENTRATION_MOL_PER_L,
    delta_subsamples: int = 2,
    num_background_frames: int = 20,
    noise_std_v: float = DEFAULT_NOISE_STD_V,
    num_averages: int = DEFAULT_CALIBRATION_AVERAGES,
    background_spectrum: np.ndarray | None = None,
    frequency_index: np.ndarray | None = None,
    chunk_groups: int = 256,
) -> SimulatedSystemMatrix:
    """Simulate a robot calibration on a ``size`` grid.

    ``frequency_index`` keeps only those receive bins (big benchmark matrices
    are never formed in full). Returns a :class:`SimulatedSystemMatrix`.
    """
    size = cast("tuple[int, int, int]", tuple(int(s) for s in size))
    dims = scanner.num_drive_channels
    fov, center = system_matrix_geometry(scanner, size)
    voxel = fov / np.asarray(size)
    centres = grid_centres_m(size, fov, center)
    n_vox = centres.shape[0]
    # Finite delta sample: 2^dims sub-positions at ±¼ voxel on driven axes.
    offs1 = (np.arange(delta_subsamples) + 0.5) / delta_subsamples - 0.5
    grids = [offs1 if a < dims else np.zeros(1) for a in range(3)]
    offs = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3) * voxel
    n_sub = offs.shape[0]
    positions = (centres[:, None, :] + offs[None, :, :]).reshape(-1, 3)
    group = np.repeat(np.arange(n_vox), n_sub)
    voxel_l = float(np.prod(voxel)) * 1e3
    iron_kg = delta_concentration_mol_per_l * voxel_l * IRON_MOLAR_MASS_G_PER_MOL * 1e-3
    weights = np.full(positions.shape[0], iron_mass_to_magnetite_volume_m3(iron_kg) / n_sub)
    spec = sample_spectra(
        scanner, particles, positions, weights, group, n_vox, frequency_index=frequency_index, chunk_groups=chunk_groups
    )
    sm = np.ascontiguousarray(np.transpose(spec, (1, 2, 0)))  # (C, K, P)
    c, k = sm.shape[:2]
    if background_spectrum is None:
        background_spectrum = scanner_background_spectrum(scanner, rng, noise_std_v)
    bgs = background_spectrum if frequency_index is None else background_spectrum[:, frequency_index]
    sigma_bin = noise_std_v * math.sqrt(scanner.num_sampling_points / 2) / math.sqrt(num_averages)

    def noise(shape):
        return sigma_bin * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))

    sm += bgs[:, :, None]
    sm += noise(sm.shape)
    bg = bgs[:, :, None] + noise((c, k, num_background_frames))
    return SimulatedSystemMatrix(
        scanner=scanner,
        size=size,
        fov_m=fov,
        center_m=center,
        delta_concentration_mol_per_l=float(delta_concentration_mol_per_l),
        system_matrix=sm,
        background=bg,
        snr=calibration_snr(sm, bg),
        num_averages=num_averages,
        frequency_index=None if frequency_index is None else np.asarray(frequency_index),
    )


@dataclass
class SimulatedScan:
    """A simulated scan: time data (N, 1, C, V) float32 V, background mask (N,)."""

    scanner: Scanner
    time_data: np.ndarray
    is_background_frame: np.ndarray
    phantom: _phantoms.RasterisedPhantom
    phantom_spectrum: np.ndarray  # (C, K) noise-free particle spectrum
    extras: dict = field(default_factory=dict)


def simulate_scan(
    scanner: Scanner,
    particles: Particles,
    phantom: _phantoms.RasterisedPhantom,
    *,
    rng: np.random.Generator,
    frames: int = 40,
    background_frames: tuple[int, int] = (5, 5),
    noise_std_v: float = DEFAULT_NOISE_STD_V,
    background_spectrum: np.ndarray | None = None,
    drift: float = 0.2,
    phase_drift_rad: float = 0.1,
) -> SimulatedScan:
    """Simulate ``frames`` foreground frames between empty-bore blocks.

    The background of frame n (of N) is b0·(1 + drift·n/(N−1))·exp(i·φ·n/(N−1)):
    a slow amplitude and phase drift, so a plain mean of the background
    frames is only right on average and interpolation in time is better.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    iron_kg = phantom.iron_ng * 1e-12
    spec = sample_spectra(scanner, particles, phantom.positions_m, iron_mass_to_magnetite_volume_m3(iron_kg))[0]
    if background_spectrum is None:
        background_spectrum = scanner_background_spectrum(scanner, rng, noise_std_v)
    n_before, n_after = (int(v) for v in background_frames)
    n_total = n_before + frames + n_after
    is_bg = np.zeros(n_total, dtype=bool)
    is_bg[:n_before] = True
    is_bg[n_before + frames :] = True
    c, v = scanner.num_receive_channels, scanner.num_sampling_points
    data = np.empty((n_total, 1, c, v), dtype=np.float32)
    for n in range(n_total):
        s = n / max(n_total - 1, 1)
        frame_spec = background_spectrum * (1.0 + drift * s) * np.exp(1j * phase_drift_rad * s)
        if not is_bg[n]:
            frame_spec = frame_spec + spec
        volt = np.fft.irfft(frame_spec, n=v, axis=-1)
        volt += noise_std_v * rng.standard_normal(volt.shape)
        data[n, 0] = volt
    return SimulatedScan(scanner, data, is_bg, phantom, spec)


# ---------------------------------------------------------------------------
# MDF files
# ---------------------------------------------------------------------------


def _acquisition_fields(scanner: Scanner, num_frames: int, num_averages: int) -> dict:
    d = scanner.num_drive_channels
    grad = np.diag(np.asarray(scanner.gradient_t_per_m, dtype=np.float64))[None, None]
    phase = (
        np.zeros((1, d, 1))
        if scanner.drive_phase_rad is None
        else np.asarray(scanner.drive_phase_rad, dtype=np.float64).reshape(1, d, 1)
    )
    return {
        "/scanner/facility": "simulation",
        "/scanner/manufacturer": "recon.simulate",
        "/scanner/name": f"FFP {d}D Lissajous",
        "/scanner/operator": "simulator",
        "/scanner/topology": "FFP",
        "/experiment/isSimulation": True,
        "/acquisition/numAverages": int(num_averages),
        "/acquisition/numFrames": int(num_frames),
        "/acquisition/numPeriodsPerFrame": 1,
        "/acquisition/startTime": "2025-01-01T00:00:00+00:00",
        "/acquisition/gradient": grad,
        "/acquisition/drivefield/baseFrequency": float(scanner.base_frequency_hz),
        "/acquisition/drivefield/cycle": float(scanner.period_s),
        "/acquisition/drivefield/divider": np.asarray(scanner.dividers, dtype=np.int64).reshape(d, 1),
        "/acquisition/drivefield/numChannels": int(d),
        "/acquisition/drivefield/phase": phase,
        "/acquisition/drivefield/strength": np.asarray(scanner.drive_amplitude_t, dtype=np.float64).reshape(1, d, 1),
        "/acquisition/drivefield/waveform": np.array([["sine"]] * d, dtype="S4"),
        "/acquisition/receiver/bandwidth": float(scanner.bandwidth_hz),
        "/acquisition/receiver/numChannels": int(scanner.num_receive_channels),
        "/acquisition/receiver/numSamplingPoints": int(scanner.num_sampling_points),
        "/acquisition/receiver/unit": "V",
    }


def _tracer_fields(concentration_mol_per_l: float) -> dict:
    return {
        "/tracer/name": ["simulated magnetite"],
        "/tracer/batch": ["sim-0"],
        "/tracer/vendor": ["recon.simulate"],
        "/tracer/solute": ["Fe"],
        "/tracer/concentration": np.array([concentration_mol_per_l], dtype=np.float64),
        "/tracer/volume": np.array([0.0]),
    }


def write_system_matrix_mdf(path: str, sim: SimulatedSystemMatrix) -> None:
    """Calibration MDF: fast frame axis J×C×K×N frequency domain, O foreground
    frames (x fastest) then E background frames."""
    from recon.mdf import write_mdf

    if sim.frequency_index is not None:
        raise ValueError("a frequency-reduced system matrix is not written to MDF")
    c, k, p = sim.system_matrix.shape
    e = sim.background.shape[-1]
    data = np.concatenate([sim.system_matrix, sim.background], axis=-1)[None].astype(np.complex64)
    fields = _acquisition_fields(sim.scanner, p + e, sim.num_averages)
    voxel = sim.fov_m / np.asarray(sim.size)
    fields.update(_tracer_fields(sim.delta_concentration_mol_per_l))
    fields.update(
        {
            "/experiment/name": "simulated calibration",
            "/measurement/data": data,
            "/measurement/isBackgroundCorrected": False,
            "/measurement/isFastFrameAxis": True,
            "/measurement/isFourierTransformed": True,
            "/measurement/isFramePermutation": False,
            "/measurement/isFrequencySelection": False,
            "/measurement/isSparsityTransformed": False,
            "/measurement/isSpectralLeakageCorrected": False,
            "/measurement/isTransferFunctionCorrected": False,
            "/measurement/isBackgroundFrame": np.concatenate([np.zeros(p, bool), np.ones(e, bool)]),
            "/calibration/method": "simulation",
            "/calibration/size": np.asarray(sim.size, dtype=np.int64),
            "/calibration/fieldOfView": np.asarray(sim.fov_m, dtype=np.float64),
            "/calibration/fieldOfViewCenter": np.asarray(sim.center_m, dtype=np.float64),
            "/calibration/deltaSampleSize": voxel,
            "/calibration/order": "xyz",
            "/calibration/snr": sim.snr[None].astype(np.float64),
        }
    )
    write_mdf(path, fields)


def write_scan_mdf(path: str, scan: SimulatedScan, *, empty_bore: bool = False) -> None:
    """Measurement MDF: time domain N×J×C×V float32 with isBackgroundFrame."""
    from recon.mdf import RAW_MEASUREMENT_FLAGS, write_mdf

    n = scan.time_data.shape[0]
    fields = _acquisition_fields(scan.scanner, n, 1)
    fields.update(
        {
            "/experiment/name": "simulated empty bore" if empty_bore else "simulated phantom scan",
            "/measurement/data": scan.time_data,
            **RAW_MEASUREMENT_FLAGS,
            "/measurement/isBackgroundFrame": scan.is_background_frame,
        }
    )
    write_mdf(path, fields)


def simulate_to_files(
    output_dir: str | os.PathLike,
    *,
    dims: int = 2,
    phantom: str = "mouse",
    seed: int = 0,
    frames: int = 40,
    background_frames: tuple[int, int] = (5, 5),
    grid: tuple[int, int, int] | None = None,
    fine_factor: int = 3,
    noise_std_v: float = DEFAULT_NOISE_STD_V,
    background_level: float = 1.0,
    drift: float = 0.2,
    target_iron_ng: float = 2000.0,
    delta_subsamples: int | None = None,
    fast: bool = False,
    empty_bore_frames: int = 0,
) -> dict:
    """Simulate a calibration and a phantom scan and write them as MDF files.

    Parameters
    ----------
    output_dir : path
        Created if missing; receives ``system_matrix.mdf``, ``measurement.mdf``,
        ``rois.json``, ``truth_image.npy`` (and ``empty_bore.mdf`` when
        ``empty_bore_frames`` > 0).
    dims : {1, 2, 3}
        Scanner dimensionality (see :func:`scanner_preset`).
    phantom : {"mouse", "points", "spheres"}
    seed : int
        Everything random derives from this seed: same seed, same files
        (bit-identical data; uuid/time fields differ).
    frames : int
        Foreground frames; ``background_frames`` = (before, after) empty-bore
        frames in the same file.
    grid : (3,) ints or None
        Calibration grid; default 20×20×1 (2D) or 15×15×15 (3D).
    fine_factor : int
        Sub-voxels per driven axis for the phantom simulation.
    noise_std_v, background_level, drift : float
        Receiver noise per sample (V), scanner background scale, relative
        background amplitude drift over the scan.
    target_iron_ng : float
        Iron in the target ROI of the mouse phantom (others scale with it).
    delta_subsamples : int or None
        Sub-positions per driven axis averaged for the finite delta sample;
        None = 2 in 1D/2D, 1 in 3D (8× cheaper, and the scan's 3×3×3
        sub-voxels still differ from the calibration positions).

    Returns
    -------
    dict (JSON-serialisable): ``system_matrix``, ``measurement``, ``rois``,
    ``truth_image`` (paths), ``truth`` {roi name: iron ng}, ``kinds``
    {roi name: kind}, ``injected_iron_ng``, ``size``, ``field_of_view_m``,
    ``field_of_view_center_m``, ``delta_concentration_mol_per_l``, ``seed``,
    ``dims`` and ``empty_bore`` (path or None).
    """
    if phantom not in _phantoms.PHANTOMS:
        raise ValueError(f"phantom must be one of {sorted(_phantoms.PHANTOMS)}, got {phantom!r}")
    out = os.fspath(output_dir)
    os.makedirs(out, exist_ok=True)
    scanner = scanner_preset(dims, fast=fast)
    particles = Particles()
    size = tuple(grid) if grid is not None else default_grid(dims)
    if len(size) != 3:
        raise ValueError(f"grid needs 3 entries (x, y, z), got {size}")
    rng = np.random.default_rng(seed)
    # One scanner background: the calibration and the scan share hardware,
    # the scan's own background drifts on top of it.
    background = scanner_background_spectrum(scanner, rng, noise_std_v, background_level)
    if delta_subsamples is None:
        delta_subsamples = 2 if dims < 3 else 1
    sm = simulate_system_matrix(
        scanner,
        particles,
        size,
        rng=rng,
        noise_std_v=noise_std_v,
        background_spectrum=background,
        delta_subsamples=delta_subsamples,
    )
    if phantom == "mouse":
        inclusions = _phantoms.mouse(sm.fov_m, dims=dims, target_iron_ng=target_iron_ng)
    else:
        inclusions = _phantoms.PHANTOMS[phantom](sm.fov_m, dims=dims)
    raster = _phantoms.rasterise(inclusions, size, sm.fov_m, sm.center_m, factor=fine_factor, dims=dims)
    scan = simulate_scan(
        scanner,
        particles,
        raster,
        rng=rng,
        frames=frames,
        background_frames=background_frames,
        noise_std_v=noise_std_v,
        background_spectrum=background,
        drift=drift,
    )
    paths = {
        "system_matrix": os.path.join(out, "system_matrix.mdf"),
        "measurement": os.path.join(out, "measurement.mdf"),
        "rois": os.path.join(out, "rois.json"),
        "truth_image": os.path.join(out, "truth_image.npy"),
    }
    write_system_matrix_mdf(paths["system_matrix"], sm)
    write_scan_mdf(paths["measurement"], scan)
    empty_path = None
    if empty_bore_frames > 0:
        empty = simulate_scan(
            scanner,
            particles,
            raster,
            rng=rng,
            frames=1,
            background_frames=(empty_bore_frames, 0),
            noise_std_v=noise_std_v,
            background_spectrum=background,
            drift=0.0,
        )
        # Keep only its empty frames: an empty-bore scan has no sample.
        empty.time_data = empty.time_data[:empty_bore_frames]
        empty.is_background_frame = np.ones(empty_bore_frames, dtype=bool)
        empty_path = os.path.join(out, "empty_bore.mdf")
        write_scan_mdf(empty_path, empty, empty_bore=True)
    with open(paths["rois"], "w", encoding="utf-8") as fh:
        json.dump({"rois": _phantoms.rois_json_records(inclusions)}, fh, indent=2)
    truth_image = _phantoms.iron_image_mol_per_l(raster, size, sm.fov_m, sm.center_m)
    np.save(paths["truth_image"], truth_image)
    truth = raster.truth_ng
    return {
        **paths,
        "empty_bore": empty_path,
        "truth": truth,
        "kinds": {inc.name: inc.kind for inc in inclusions},
        "injected_iron_ng": float(sum(truth.values())),
        "size": [int(s) for s in size],
        "field_of_view_m": [float(v) for v in sm.fov_m],
        "field_of_view_center_m": [float(v) for v in sm.center_m],
        "delta_concentration_mol_per_l": sm.delta_concentration_mol_per_l,
        "seed": int(seed),
        "dims": int(dims),
        "phantom": phantom,
    }
