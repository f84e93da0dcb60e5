"""recon.physics: scanner and sample-group refusals, the field-free-point
trajectory with drive phases, explicit sample times, and empty group chunks."""

import math

import numpy as np
import pytest

from recon.physics import Particles, Scanner, induced_voltage, sample_spectra

# Positions in metres of an analytic sine trajectory: float64 rounding only.
FFP_TOL = 1e-12


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dividers": (), "drive_amplitude_t": ()}, "a scanner has 1 to 3 drive channels, got 0 dividers"),
        (
            {"dividers": (10, 11, 12, 13), "drive_amplitude_t": (1e-3,) * 4},
            "a scanner has 1 to 3 drive channels, got 4 dividers",
        ),
        ({"gradient_t_per_m": (1.0, 1.0)}, r"gradient_t_per_m needs 3 entries, got 2"),
        ({"coil_sensitivity_t_per_a": ()}, "1 to 3 receive coils, got 0"),
        ({"coil_sensitivity_t_per_a": (1.0,) * 4}, "1 to 3 receive coils, got 4"),
        ({"dividers": (102, 0)}, r"dividers must be positive integers, got \(102, 0\)"),
        ({"dividers": (102, 96.5)}, r"dividers must be positive integers, got \(102, 96.5\)"),
        ({"drive_phase_rad": (0.0,)}, "drive_phase_rad has 1 entries for 2 dividers"),
        ({"oversampling": 0}, "oversampling must be >= 1, got 0"),
        ({"gradient_t_per_m": (-2.0, 0.0, 4.0)}, "drive axis 1 has zero gradient: no field-free point"),
    ],
)
def test_it_refuses_an_inconsistent_scanner(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Scanner(**kwargs)


def test_the_field_free_point_follows_the_drive_with_its_phase():
    s = Scanner(drive_phase_rad=(0.0, math.pi / 2))
    amp = np.asarray(s.drive_amplitude_t)
    grad = np.asarray(s.gradient_t_per_m[:2])
    f = s.drive_frequencies_hz
    t = np.array([0.0, 0.25 / f[0], 0.25 / f[1]])
    ffp = s.field_free_point_m(t)
    assert ffp.shape == (3, 3)
    expected_x = amp[0] / grad[0] * np.sin(2 * np.pi * f[0] * t)
    expected_y = amp[1] / grad[1] * np.cos(2 * np.pi * f[1] * t)  # phase π/2: sin → cos
    np.testing.assert_allclose(ffp[:, 0], expected_x, atol=FFP_TOL)
    np.testing.assert_allclose(ffp[:, 1], expected_y, atol=FFP_TOL)
    np.testing.assert_array_equal(ffp[:, 2], 0.0)  # the z axis is not driven
    # At t = 0 x sits at the centre and y at its full excursion A/G.
    assert ffp[0, 0] == 0.0
    assert ffp[0, 1] == pytest.approx(amp[1] / grad[1], rel=1e-12)


def test_a_drive_phase_changes_the_signal():
    pos = np.array([[1e-3, -2e-3, 0.0]])
    vol = np.array([1e-12])
    plain = induced_voltage(Scanner(), Particles(), pos, vol)
    shifted = induced_voltage(Scanner(drive_phase_rad=(0.0, 0.3)), Particles(), pos, vol)
    assert plain.shape == shifted.shape == (1, 2, Scanner().num_sampling_points * Scanner().oversampling)
    assert np.abs(plain - shifted).max() > 1e-3 * np.abs(plain).max()


def test_explicit_times_and_no_group_equal_the_default_period_in_row_zero():
    s = Scanner()
    pos = np.array([[1e-3, -2e-3, 0.0], [-4e-3, 1e-3, 0.0]])
    vol = np.array([1e-12, 3e-12])
    default = induced_voltage(s, Particles(), pos, vol, group=np.zeros(2, dtype=np.int64))
    n_t = s.num_sampling_points * s.oversampling
    times = np.arange(n_t) / (s.base_frequency_hz * s.oversampling)
    explicit = induced_voltage(s, Particles(), pos, vol, times_s=times)
    np.testing.assert_array_equal(explicit, default)
    # Half the period only: the first half of the same signal.
    half = induced_voltage(s, Particles(), pos, vol, times_s=times[: n_t // 2])
    np.testing.assert_allclose(half, default[..., : n_t // 2], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "vol, group, groups, message",
    [
        (np.ones(3), None, 1, r"magnetite_volume_m3 has shape \(3,\), expected \(2,\)"),
        (np.ones(2), np.zeros(3), 1, r"group has shape \(3,\), expected \(2,\)"),
        (np.ones(2), np.array([0, 2]), 2, r"group indices must lie in \[0, 2\), got \[0, 2\]"),
        (np.ones(2), np.array([-1, 0]), 2, r"group indices must lie in \[0, 2\), got \[-1, 0\]"),
    ],
)
def test_it_refuses_sample_groups_that_do_not_fit(vol, group, groups, message):
    with pytest.raises(ValueError, match=message):
        induced_voltage(Scanner(), Particles(), np.zeros((2, 3)), vol * 1e-12, group=group, num_groups=groups)


def test_a_group_without_samples_has_a_zero_spectrum():
    s = Scanner()
    pos = np.array([[1e-3, -2e-3, 0.0], [-4e-3, 1e-3, 0.0]])
    vol = np.array([1e-12, 3e-12])
    out = sample_spectra(s, Particles(), pos, vol, group=np.array([0, 2]), num_groups=3, chunk_groups=1)
    assert out.shape == (3, 2, s.num_frequencies)
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_array_equal(out[0], sample_spectra(s, Particles(), pos[:1], vol[:1])[0])
    np.testing.assert_array_equal(out[2], sample_spectra(s, Particles(), pos[1:], vol[1:])[0])
