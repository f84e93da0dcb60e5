"""Field-free-point MPI physics: Lissajous drive fields and equilibrium particles.

All quantities are SI. The scanner superposes a static selection field with a
diagonal gradient G (T/m) and sinusoidal drive fields A_d sin(2π f_d t + φ_d)
(T) on up to three axes, with f_d = base_frequency / divider_d. The flux
density at r is B(r, t) = G∘r − A∘sin(ωt + φ); the field-free point sits where
B = 0. Particles follow the equilibrium Langevin model

    M(r, t) = φ(r) · M_s · L(β|B|) · B/|B|,  β = m / (k_B T),  m = M_s π d³ / 6,

with φ the magnetite volume fraction, and receive coil c (along axis c) sees

    u_c(t) = −μ0 · p_c · d/dt ∫ M_c(r, t) dr.

The time derivative is analytic (chain rule through the Langevin derivative,
see :func:`recon._kernels.induced_signal_kernel`); the voltage is evaluated on
a grid ``oversampling`` times finer than the receiver's and the spectrum is
truncated to the K receive frequencies, i.e. an ideal anti-aliasing filter.
Spectra follow the MDF convention: the unnormalised ``rfft`` of the V time
samples of one period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np

from recon import _kernels

MU0 = 4e-7 * math.pi  # vacuum permeability, T·m/A
K_BOLTZMANN = 1.380649e-23  # J/K
IRON_MOLAR_MASS_G_PER_MOL = 55.845
#: Fe mass fraction of magnetite Fe3O4 (3 × 55.845 / 231.533).
MAGNETITE_IRON_FRACTION = 3 * IRON_MOLAR_MASS_G_PER_MOL / 231.533
MAGNETITE_DENSITY_KG_PER_M3 = 5170.0


def langevin(xi: np.ndarray) -> np.ndarray:
    """Langevin function L(ξ) = coth ξ − 1/ξ (L(0) = 0), elementwise, float64."""
    xi = np.asarray(xi, dtype=np.float64)
    flat = np.ascontiguousarray(xi.ravel())
    out_l = np.empty_like(flat)
    out_dl = np.empty_like(flat)
    _kernels.langevin_kernel(flat, out_l, out_dl)
    return out_l.reshape(xi.shape)


def langevin_derivative(xi: np.ndarray) -> np.ndarray:
    """L'(ξ) = 1/ξ² − 1/sinh² ξ (L'(0) = 1/3), elementwise, float64."""
    xi = np.asarray(xi, dtype=np.float64)
    flat = np.ascontiguousarray(xi.ravel())
    out_l = np.empty_like(flat)
    out_dl = np.empty_like(flat)
    _kernels.langevin_kernel(flat, out_l, out_dl)
    return out_dl.reshape(xi.shape)


def iron_mass_to_magnetite_volume_m3(iron_mass_kg: np.ndarray | float) -> np.ndarray:
    """Volume of magnetite (m³) that holds the given iron mass (kg)."""
    return np.asarray(iron_mass_kg) / MAGNETITE_IRON_FRACTION / MAGNETITE_DENSITY_KG_PER_M3


@dataclass(frozen=True)
class Particles:
    """Equilibrium single-core particle ensemble.

    Parameters
    ----------
    core_diameter_m : float
        Magnetic core diameter (m); 20–30 nm for imaging tracers.
    temperature_k : float
        Temperature (K).
    saturation_magnetisation_a_per_m : float
        M_s of the core material (A/m); magnetite ≈ 4.8e5.
    """

    core_diameter_m: float = 25e-9
    temperature_k: float = 310.0
    saturation_magnetisation_a_per_m: float = 4.8e5

    @property
    def moment_a_m2(self) -> float:
        """Magnetic moment of one core, m = M_s π d³ / 6 (A·m²)."""
        return self.saturation_magnetisation_a_per_m * math.pi * self.core_diameter_m**3 / 6.0

    @property
    def beta_per_t(self) -> float:
        """β = m / (k_B T) (1/T): ξ = β |B|."""
        return self.moment_a_m2 / (K_BOLTZMANN * self.temperature_k)


@dataclass(frozen=True)
class Scanner:
    """Field-free-point scanner with Lissajous excitation.

    Parameters
    ----------
    gradient_t_per_m : (3,) floats
        Diagonal selection-field gradient (T/m), e.g. Bruker (−1, −1, 2).
    drive_amplitude_t : (D,) floats
        Drive amplitude per drive channel (T); channel d drives axis d.
    dividers : (D,) ints
        f_d = base_frequency_hz / dividers[d]. One period has
        V = lcm(dividers) samples at the base frequency (the sampling rate).
    base_frequency_hz : float
        Base (sampling) frequency (Hz); Bruker 2.5 MHz.
    coil_sensitivity_t_per_a : (C,) floats
        Receive coil sensitivity p_c (T/A) of the coil along axis c.
    drive_phase_rad : (D,) floats or None
        Drive phases (rad); None = all zero (sine excitation).
    oversampling : int
        Evaluation grid = ``oversampling`` × V points per period; the spectrum
        is cut to the K = V//2 + 1 receive frequencies (ideal anti-aliasing).
    """

    gradient_t_per_m: tuple[float, float, float] = (-1.0, -1.0, 2.0)
    drive_amplitude_t: tuple[float, ...] = (12e-3, 12e-3)
    dividers: tuple[int, ...] = (102, 96)
    base_frequency_hz: float = 2.5e6
    coil_sensitivity_t_per_a: tuple[float, ...] = (1.0, 1.0)
    drive_phase_rad: tuple[float, ...] | None = None
    oversampling: int = 2

    def __post_init__(self) -> None:
        d = len(self.dividers)
        if not 1 <= d <= 3:
            raise ValueError(f"a scanner has 1 to 3 drive channels, got {d} dividers")
        if len(self.drive_amplitude_t) != d:
            raise ValueError(f"drive_amplitude_t has {len(self.drive_amplitude_t)} entries for {d} dividers")
        if len(self.gradient_t_per_m) != 3:
            raise ValueError(f"gradient_t_per_m needs 3 entries, got {len(self.gradient_t_per_m)}")
        if not 1 <= len(self.coil_sensitivity_t_per_a) <= 3:
            raise ValueError(f"1 to 3 receive coils, got {len(self.coil_sensitivity_t_per_a)}")
        if any(int(v) != v or v < 1 for v in self.dividers):
            raise ValueError(f"dividers must be positive integers, got {self.dividers}")
        if self.drive_phase_rad is not None and len(self.drive_phase_rad) != d:
            raise ValueError(f"drive_phase_rad has {len(self.drive_phase_rad)} entries for {d} dividers")
        if self.oversampling < 1:
            raise ValueError(f"oversampling must be >= 1, got {self.oversampling}")
        for axis in range(d):
            if self.gradient_t_per_m[axis] == 0:
                raise ValueError(f"drive axis {axis} has zero gradient: no field-free point")

    # -- timing -----------------------------------------------------------
    @property
    def num_drive_channels(self) -> int:
        return len(self.dividers)

    @property
    def num_receive_channels(self) -> int:
        return len(self.coil_sensitivity_t_per_a)

    @property
    def num_sampling_points(self) -> int:
        """V = lcm(dividers): samples per period at the base frequency."""
        return int(math.lcm(*[int(v) for v in self.dividers]))

    @property
    def num_frequencies(self) -> int:
        """K = V // 2 + 1."""
        return self.num_sampling_points // 2 + 1

    @property
    def period_s(self) -> float:
        return self.num_sampling_points / self.base_frequency_hz

    @property
    def bandwidth_hz(self) -> float:
        return self.base_frequency_hz / 2.0

    @property
    def drive_frequencies_hz(self) -> np.ndarray:
        return self.base_frequency_hz / np.asarray(self.dividers, dtype=np.float64)

    @property
    def frequencies_hz(self) -> np.ndarray:
        """(K,) receive frequencies k / period (Hz)."""
        return np.arange(self.num_frequencies) / self.period_s

    @property
    def drive_field_of_view_m(self) -> np.ndarray:
        """(3,) extent swept by the field-free point: 2A/|G| on driven axes, 0 elsewhere."""
        fov = np.zeros(3)
        for axis, amp in enumerate(self.drive_amplitude_t):
            fov[axis] = 2.0 * amp / abs(self.gradient_t_per_m[axis])
        return fov

    # -- fields in the layout the kernel wants -----------------------------
    def _drive_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        amp = np.zeros(3)
        omega = np.zeros(3)
        phase = np.zeros(3)
        d = self.num_drive_channels
        amp[:d] = self.drive_amplitude_t
        omega[:d] = 2.0 * math.pi * self.drive_frequencies_hz
        if self.drive_phase_rad is not None:
            phase[:d] = self.drive_phase_rad
        return amp, omega, phase

    def field_free_point_m(self, times_s: np.ndarray) -> np.ndarray:
        """(T, 3) position of the field-free point (m) at the given times."""
        amp, omega, phase = self._drive_arrays()
        t = np.asarray(times_s, dtype=np.float64)[:, None]
        drive = amp * np.sin(omega * t + phase)
        grad = np.asarray(self.gradient_t_per_m, dtype=np.float64)
        ffp = np.zeros_like(drive)
        d = self.num_drive_channels
        ffp[:, :d] = drive[:, :d] / grad[:d]
        return ffp


def induced_voltage(
    scanner: Scanner,
    particles: Particles,
    positions_m: np.ndarray,
    magnetite_volume_m3: np.ndarray,
    group: np.ndarray | None = None,
    num_groups: int = 1,
    times_s: np.ndarray | None = None,
) -> np.ndarray:
    """Receive-coil voltage of point-like particle samples.

    Parameters
    ----------
    scanner, particles : Scanner, Particles
    positions_m : (N, 3) float64
        Sample positions in scanner coordinates (m).
    magnetite_volume_m3 : (N,) float64
        Magnetite volume per sample (m³) = volume fraction × sample volume.
    group : (N,) int64 or None
        Output row that each sample adds into (e.g. the voxel of a sub-sample);
        None = all into row 0.
    num_groups : int
        Number of output rows.
    times_s : (T,) float64 or None
        Sample times; default one period on the oversampled grid.

    Returns
    -------
    (num_groups, C, T) float64 voltage in V.
    """
    positions = np.ascontiguousarray(positions_m, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions_m must have shape (N, 3), got {positions.shape}")
    weights = np.ascontiguousarray(magnetite_volume_m3, dtype=np.float64)
    if weights.shape != (positions.shape[0],):
        raise ValueError(f"magnetite_volume_m3 has shape {weights.shape}, expected ({positions.shape[0]},)")
    if group is None:
        group = np.zeros(positions.shape[0], dtype=np.int64)
    group = np.ascontiguousarray(group, dtype=np.int64)
    if group.shape != weights.shape:
        raise ValueError(f"group has shape {group.shape}, expected {weights.shape}")
    if group.size and (group.min() < 0 or group.max() >= num_groups):
        raise ValueError(f"group indices must lie in [0, {num_groups}), got [{group.min()}, {group.max()}]")
    if times_s is None:
        n_t = scanner.num_sampling_points * scanner.oversampling
        times_s = np.arange(n_t) / (scanner.base_frequency_hz * scanner.oversampling)
    times = np.ascontiguousarray(times_s, dtype=np.float64)
    amp, omega, phase = scanner._drive_arrays()
    out = np.zeros((num_groups, scanner.num_receive_channels, times.shape[0]), dtype=np.float64)
    _kernels.induced_signal_kernel(
        positions,
        weights,
        group,
        np.asarray(scanner.gradient_t_per_m, dtype=np.float64),
        amp,
        omega,
        phase,
        np.asarray(scanner.coil_sensitivity_t_per_a, dtype=np.float64),
        particles.beta_per_t,
        MU0 * particles.saturation_magnetisation_a_per_m,
        times,
        out,
    )
    return out


def voltage_to_spectrum(voltage: np.ndarray, scanner: Scanner) -> np.ndarray:
    """Receive spectrum (..., K) complex128 of one period of oversampled voltage.

    Equals the unnormalised ``rfft`` of the V receiver samples of a perfectly
    band-limited signal: the oversampled FFT is divided by ``oversampling`` and
    cut to the K receive bins.
    """
    k = scanner.num_frequencies
    spec = np.fft.rfft(voltage, axis=-1)[..., :k] / scanner.oversampling
    return spec


def sample_spectra(
    scanner: Scanner,
    particles: Particles,
    positions_m: np.ndarray,
    magnetite_volume_m3: np.ndarray,
    group: np.ndarray | None = None,
    num_groups: int = 1,
    frequency_index: np.ndarray | None = None,
    chunk_groups: int = 256,
) -> np.ndarray:
    """Spectra (num_groups, C, K_sel) complex128 of grouped particle samples.

    Groups are processed in chunks of ``chunk_groups`` so the oversampled time
    signal never needs more than chunk × C × V × oversampling doubles;
    ``frequency_index`` keeps only the given receive bins (e.g. the harmonics a
    benchmark selects) so a large system matrix is never held in full.
    """
    positions = np.asarray(positions_m, dtype=np.float64)
    weights = np.asarray(magnetite_volume_m3, dtype=np.float64)
    if group is None:
        group = np.zeros(positions.shape[0], dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    k_sel = scanner.num_frequencies if frequency_index is None else len(frequency_index)
    out = np.zeros((num_groups, scanner.num_receive_channels, k_sel), dtype=np.complex128)
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    for start in range(0, num_groups, chunk_groups):
        stop = min(start + chunk_groups, num_groups)
        lo, hi = np.searchsorted(sorted_group, [start, stop])
        idx = order[lo:hi]
        if idx.size == 0:
            continue
        volt = induced_voltage(scanner, particles, positions[idx], weights[idx], group[idx] - start, stop - start)
        spec = voltage_to_spectrum(volt, scanner)
        out[start:stop] = spec if frequency_index is None else spec[..., frequency_index]
    return out


def grid_centres_m(size: tuple[int, int, int], fov_m: np.ndarray, center_m: np.ndarray) -> np.ndarray:
    """(P, 3) voxel centres of a regular grid, x fastest (MDF calibration order)."""
    size = cast("tuple[int, int, int]", tuple(int(s) for s in size))
    fov = np.asarray(fov_m, dtype=np.float64)
    center = np.asarray(center_m, dtype=np.float64)
    axes = [center[a] - fov[a] / 2 + (np.arange(size[a]) + 0.5) * fov[a] / size[a] for a in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
