"""Physics: Langevin model, induced signal harmonics, simulator determinism."""

import numpy as np
import pytest

from recon import phantoms, simulate
from recon.physics import (
    Particles,
    Scanner,
    induced_voltage,
    langevin,
    langevin_derivative,
    sample_spectra,
)

LANGEVIN_SERIES_TOL = 1e-12
DERIVATIVE_FD_TOL = 1e-6


def test_it_has_the_langevin_limits():
    xi = np.array([0.0, 1e-6, 1e-3, 1.0, 50.0, 1e4])
    lang = langevin(xi)
    assert lang[0] == 0.0
    np.testing.assert_allclose(lang[1], 1e-6 / 3, rtol=LANGEVIN_SERIES_TOL)
    np.testing.assert_allclose(lang[3], 1 / np.tanh(1.0) - 1.0, rtol=1e-14)
    np.testing.assert_allclose(lang[4], 1 - 1 / 50.0, rtol=1e-14)
    assert lang[5] > 1 - 2e-4  # saturates towards 1
    np.testing.assert_allclose(langevin(-xi), -lang)  # odd
    assert langevin_derivative(np.array([0.0]))[0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("xi", [1e-4, 2e-3, 0.3, 2.0, 12.0, 29.0, 31.0])
def test_it_differentiates_langevin_consistently(xi):
    h = 1e-6 * max(xi, 1.0)
    fd = (langevin(np.array([xi + h])) - langevin(np.array([xi - h]))) / (2 * h)
    np.testing.assert_allclose(langevin_derivative(np.array([xi])), fd, rtol=DERIVATIVE_FD_TOL, atol=1e-9)


def test_it_puts_a_point_source_signal_at_the_mixing_frequencies():
    scanner = Scanner()  # Bruker 2D: 16 and 17 drive cycles per 1632-sample period
    spec = sample_spectra(scanner, Particles(), np.array([[1e-3, -2e-3, 0.0]]), np.array([1e-12]))[0]
    assert spec.shape == (2, scanner.num_frequencies)
    nx, ny = 1632 // 102, 1632 // 96
    mixing = {abs(a * nx + b * ny) for a in range(-40, 41) for b in range(-40, 41)}
    power = np.abs(spec) ** 2
    on_mixing = sum(power[:, k].sum() for k in mixing if k < scanner.num_frequencies)
    assert on_mixing / power.sum() > 1 - 1e-9
    # The x channel's strongest line is the x fundamental, followed by odd x harmonics.
    assert np.argmax(np.abs(spec[0])) == nx


def test_it_rejects_positions_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"positions_m must have shape \(N, 3\), got \(4, 2\)"):
        induced_voltage(Scanner(), Particles(), np.zeros((4, 2)), np.zeros(4))


def test_it_rejects_a_scanner_with_mismatched_drive_channels():
    with pytest.raises(ValueError, match="drive_amplitude_t has 1 entries for 2 dividers"):
        Scanner(drive_amplitude_t=(12e-3,), dividers=(102, 96))


def _scan(seed):
    scanner = simulate.scanner_preset(2, fast=True)
    fov, center = simulate.system_matrix_geometry(scanner, (8, 8, 1))
    raster = phantoms.rasterise(phantoms.spheres(fov), (8, 8, 1), fov, center, factor=3)
    return simulate.simulate_scan(scanner, Particles(), raster, rng=np.random.default_rng(seed), frames=3)


def test_it_simulates_identically_with_the_same_seed():
    a, b, c = _scan(7), _scan(7), _scan(8)
    np.testing.assert_array_equal(a.time_data, b.time_data)
    assert not np.array_equal(a.time_data, c.time_data)


@pytest.mark.parametrize("xi", [1e-4, 0.0099, 0.0101, 0.05, 0.3, 2.0, 12.0, 29.9, 30.1])
def test_it_matches_a_50_digit_langevin_reference(xi):
    import decimal

    decimal.getcontext().prec = 50
    x = decimal.Decimal(xi)
    e2 = (2 * x).exp()
    sh = (x.exp() - (-x).exp()) / 2
    ref_l = float((e2 + 1) / (e2 - 1) - 1 / x)
    ref_dl = float(1 / x**2 - 1 / sh**2)
    np.testing.assert_allclose(langevin(np.array([xi])), ref_l, rtol=1e-11)
    np.testing.assert_allclose(langevin_derivative(np.array([xi])), ref_dl, rtol=1e-11)
