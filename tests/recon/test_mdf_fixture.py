"""The real 2018 robot calibration (MDF 2.0, legacy names) reads correctly."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.mdf import MDFFile
from tests.recon.test_mdf_factories import FIXTURE

REPO = Path(__file__).resolve().parents[2]


def test_it_reads_the_fixture_header():
    with MDFFile(FIXTURE) as f:
        assert f.version == "2.0"
        assert f.kind == "calibration"
        assert f.num_frames == 9
        assert f.num_periods == 1  # from the legacy /acquisition/numPeriods
        assert f.num_receive_channels == 1
        assert f.num_sampling_points == 152
        assert f.num_frequencies == 77
        assert f.bandwidth_hz == 1953125.0
        assert f.base_frequency_hz == 125e6
        np.testing.assert_array_equal(f.dividers, [4864])
        assert f.drive_strength_t.shape == (1, 1, 1)
        assert f.drive_strength_t[0, 0, 0] == pytest.approx(0.005)
        assert f.layout["isFastFrameAxis"] is False  # from the legacy isTransposed
        assert f.layout["isFourierTransformed"] is False
        assert f.calibration_size == (9, 1, 1)
        np.testing.assert_allclose(f.field_of_view_m, [0.09, 0.001, 0.001])
        np.testing.assert_allclose(f.field_of_view_center_m, [0.156, -0.0112, 0.071])
        assert f.tracer_concentration_mol_per_l == 0.0
        assert f.snr is None and f.transfer_function is None
        assert not f.is_background_frame.any() and f.is_background_frame.shape == (9,)
        np.testing.assert_allclose(f.frequencies_hz[1], 1953125.0 / 76)
        assert f.field("/scanner/operator") == "Tobi"


def test_it_returns_the_fixture_spectra_as_rfft_of_the_converted_samples():
    with h5py.File(FIXTURE, "r") as h5:
        raw = h5["/measurement/data"][()].astype(np.float64)
        a, b = h5["/acquisition/receiver/dataConversionFactor"][0]
    with MDFFile(FIXTURE) as f:
        u = f.spectra()
        sub = f.spectra(frames=[8, 2], frequencies=[3, 0, 76])
    assert u.shape == (9, 1, 1, 77) and u.dtype == np.complex128
    expected = np.fft.rfft(a * raw + b, axis=-1)
    np.testing.assert_allclose(u, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sub, expected[[8, 2]][..., [3, 0, 76]], rtol=1e-12, atol=1e-12)


def test_it_gives_the_fixture_system_matrix_in_grid_order():
    with MDFFile(FIXTURE) as f:
        S, bg = f.system_matrix()
        u = f.spectra()
    assert S.shape == (1, 77, 9) and bg.shape == (1, 77, 0)
    np.testing.assert_allclose(S[0], u[:, 0, 0, :].T)


def test_it_prints_the_fixture_info_from_the_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "recon", "info", str(FIXTURE)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["version"] == "2.0"
    assert info["kind"] == "calibration"
    assert info["frames"] == 9
    assert info["periods_per_frame"] == 1
    assert info["receive_channels"] == 1
    assert info["samples_per_period"] == 152
    assert info["bandwidth_hz"] == 1953125
    assert info["base_frequency_hz"] == 125e6
    assert info["dividers"] == [4864]
    assert info["calibration"]["size"] == [9, 1, 1]
    assert info["calibration"]["field_of_view_m"] == pytest.approx([0.09, 0.001, 0.001])
    assert info["background_frames"] == 0
    assert info["layout"]["isFastFrameAxis"] is False
    assert info["tracer"]["solute"] == "Fe"
    assert "Traceback" not in proc.stderr
