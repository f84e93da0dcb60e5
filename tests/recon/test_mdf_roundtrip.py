"""What goes into an MDF file in any uncompressed layout comes back out the same."""

import h5py
import numpy as np
import pytest

from recon.mdf import MDFError, MDFFile, write_mdf, write_reconstruction
from tests.recon.test_mdf_factories import (
    BANDWIDTH_HZ,
    calibration_fields,
    layout_fields,
    random_spectra,
    write_fast_calibration,
    write_time_measurement,
)

# float32/complex64 storage, compared after conversion to float64/complex128
RTOL = 1e-6


@pytest.mark.parametrize("legacy", [False, True])
def test_it_round_trips_time_domain_data(tmp_path, legacy):
    path = tmp_path / "t.mdf"
    t = write_time_measurement(path, legacy=legacy)
    with MDFFile(path) as f:
        assert (f.num_frames, f.num_periods, f.num_receive_channels, f.num_sampling_points) == (6, 2, 3, 16)
        assert f.kind == "measurement" and f.version == "2.1.0"
        assert f.layout["isFastFrameAxis"] is False
        u = f.spectra()
        part = f.spectra(frames=[5, 0], frequencies=[8, 1], channels=[2], periods=1)
        np.testing.assert_allclose(f.frequencies_hz, np.arange(9) * 2 * BANDWIDTH_HZ / 16)
    expected = np.fft.rfft(t.astype(np.float64), axis=-1)
    np.testing.assert_allclose(u, expected, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(part, expected[[5, 0]][:, [1]][:, :, [2]][..., [8, 1]], rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("legacy", [False, True])
def test_it_round_trips_frequency_domain_data(tmp_path, fast, legacy):
    rng = np.random.default_rng(3)
    spec = random_spectra(rng, 5, 2, 2, 9)
    path = tmp_path / "f.mdf"
    write_mdf(path, layout_fields(spec, V=16, fourier=True, fast=fast, legacy=legacy))
    with MDFFile(path) as f:
        assert f.layout["isFastFrameAxis"] is fast
        np.testing.assert_allclose(f.spectra(), spec, rtol=RTOL)
        np.testing.assert_allclose(
            f.spectra(frames=slice(1, 4), frequencies=[7, 2, 2], channels=1),
            spec[1:4][:, :, [1]][..., [7, 2, 2]],
            rtol=RTOL,
        )


@pytest.mark.parametrize("base", [0, 1])
@pytest.mark.parametrize("fast", [False, True])
def test_it_honours_a_frequency_selection_written_0_or_1_based(tmp_path, base, fast):
    rng = np.random.default_rng(4)
    spec = random_spectra(rng, 4, 1, 2, 33)  # V = 64
    # includes 0 (only possible 0-based) when base 0; includes 32 = K-1 both ways
    selection = np.array([0, 3, 5, 17, 32]) if base == 0 else np.array([3, 5, 17, 32])
    path = tmp_path / "sel.mdf"
    write_mdf(
        path, layout_fields(spec, V=64, fourier=True, fast=fast, frequency_selection=selection, selection_base=base)
    )
    with MDFFile(path) as f:
        np.testing.assert_array_equal(f.available_frequencies, selection)
        np.testing.assert_allclose(f.spectra(), spec[..., selection], rtol=RTOL)
        np.testing.assert_allclose(f.spectra(frequencies=[17, 3]), spec[..., [17, 3]], rtol=RTOL)
        with pytest.raises(MDFError, match=r"frequency index 4 .* not stored"):
            f.spectra(frequencies=[4])


@pytest.mark.parametrize("base", [0, 1])
@pytest.mark.parametrize("fast", [False, True])
def test_it_undoes_a_frame_permutation(tmp_path, base, fast):
    rng = np.random.default_rng(5)
    spec = random_spectra(rng, 6, 1, 1, 5)
    perm = np.array([3, 0, 5, 1, 4, 2])  # stored frame i is acquisition frame perm[i]
    background = np.array([0, 0, 0, 1, 0, 1], dtype=bool)  # acquisition order
    path = tmp_path / "perm.mdf"
    write_mdf(
        path,
        layout_fields(spec, V=8, fourier=True, fast=fast, permutation=perm, selection_base=base, background=background),
    )
    with h5py.File(path, "r") as h5:  # the file really is stored permuted
        stored = h5["/measurement/data"][()]
        stored = np.moveaxis(stored, 3, 0) if fast else stored
        np.testing.assert_allclose(stored[0], spec[3])
    with MDFFile(path) as f:
        np.testing.assert_allclose(f.spectra(), spec, rtol=RTOL)
        np.testing.assert_allclose(f.spectra(frames=[2, 3]), spec[[2, 3]], rtol=RTOL)
        np.testing.assert_array_equal(f.is_background_frame, background)


def test_it_applies_the_data_conversion_factor_to_int16_raw_samples(tmp_path):
    rng = np.random.default_rng(6)
    raw = rng.integers(-2000, 2000, size=(3, 1, 2, 20)).astype(np.int16)
    conversion = np.array([[1e-4, 0.01], [2e-4, -0.5]])  # (a, b) per channel: volts = a * raw + b
    path = tmp_path / "int16.mdf"
    write_mdf(path, layout_fields(raw, V=20, fourier=False, fast=False, conversion=conversion))
    with h5py.File(path, "r") as h5:
        assert h5["/measurement/data"].dtype == np.int16  # raw stays raw
    volts = raw * conversion[:, 0][None, None, :, None] + conversion[:, 1][None, None, :, None]
    with MDFFile(path) as f:
        np.testing.assert_allclose(f.spectra(), np.fft.rfft(volts, axis=-1), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(
            f.spectra(channels=[1]), np.fft.rfft(volts[:, :, [1]], axis=-1), rtol=1e-12, atol=1e-9
        )


def test_it_applies_the_conversion_factor_to_stored_spectra_with_the_offset_on_dc(tmp_path):
    rng = np.random.default_rng(7)
    raw = rng.integers(-100, 100, size=(2, 1, 1, 12)).astype(np.int16)
    volts = raw * 0.5 + 0.25
    spec = np.fft.rfft(raw.astype(float), axis=-1)
    path = tmp_path / "fdconv.mdf"
    write_mdf(path, layout_fields(spec.astype(np.complex64), V=12, fourier=True, fast=True, conversion=[[0.5, 0.25]]))
    with MDFFile(path) as f:
        np.testing.assert_allclose(f.spectra(), np.fft.rfft(volts, axis=-1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fast", [False, True])
def test_it_splits_a_system_matrix_into_foreground_and_background(tmp_path, fast):
    rng = np.random.default_rng(8)
    size, E = (3, 2, 2), 3
    O = 12
    spec = random_spectra(rng, O + E, 2, 2, 9)
    bg = np.zeros(O + E, dtype=bool)
    bg[[0, 7, 14]] = True  # background blocks interleaved, as a robot records them
    fields = layout_fields(spec, V=16, fourier=True, fast=fast, background=bg)
    fields.update(calibration_fields(size, E))
    path = tmp_path / "sm.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f:
        assert f.kind == "calibration" and f.calibration_size == size
        S, B = f.system_matrix(frequencies=[8, 1, 4], channels=[1, 0], period=1)
    fg = spec[~bg][:, 1]  # (O, C, K)
    bgs = spec[bg][:, 1]
    np.testing.assert_allclose(S, np.transpose(fg, (1, 2, 0))[[1, 0]][:, [8, 1, 4]], rtol=RTOL)
    np.testing.assert_allclose(B, np.transpose(bgs, (1, 2, 0))[[1, 0]][:, [8, 1, 4]], rtol=RTOL)


def test_it_reads_system_matrix_rows_in_any_order_with_repeats(tmp_path):
    path = tmp_path / "fast.mdf"
    spec, bg = write_fast_calibration(path)
    rows = [15, 3, 3, 0, 9]
    with MDFFile(path) as f:
        S, B = f.system_matrix(frequencies=rows)
        S_all, _ = f.system_matrix()
        assert f.snr.shape == (1, 2, 16)
    np.testing.assert_allclose(S, np.transpose(spec[~bg][:, 0], (1, 2, 0))[:, rows], rtol=RTOL)
    np.testing.assert_allclose(B, np.transpose(spec[bg][:, 0], (1, 2, 0))[:, rows], rtol=RTOL)
    assert S_all.shape == (2, 16, 24)


def test_it_builds_the_system_matrix_of_a_time_domain_calibration(tmp_path):
    rng = np.random.default_rng(9)
    t = rng.standard_normal((7, 1, 1, 10)).astype(np.float32)  # 6 positions + 1 background
    bg = np.array([0, 0, 0, 0, 0, 0, 1], dtype=bool)
    fields = layout_fields(t, V=10, fourier=False, fast=False, background=bg)
    fields.update(calibration_fields((3, 2, 1), 1))
    path = tmp_path / "tdsm.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f:
        S, B = f.system_matrix(frequencies=[5, 1])
    spec = np.fft.rfft(t.astype(float), axis=-1)[:, 0, 0]  # (N, K)
    np.testing.assert_allclose(S[0], spec[:6][:, [5, 1]].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(B[0], spec[6:][:, [5, 1]].T, rtol=1e-5, atol=1e-6)


def test_it_reads_legacy_real_imaginary_pairs(tmp_path):
    rng = np.random.default_rng(10)
    spec = random_spectra(rng, 3, 1, 1, 5)
    pairs = np.stack([spec.real, spec.imag], axis=-1)
    fields = layout_fields(spec, V=8, fourier=True, fast=False)
    fields["/measurement/data"] = pairs
    path = tmp_path / "pairs.mdf"
    write_mdf(path, fields)
    with MDFFile(path) as f:
        np.testing.assert_allclose(f.spectra(), spec, rtol=RTOL)


def test_it_writes_mdf_conventions(tmp_path):
    path = tmp_path / "conv.mdf"
    z = np.arange(4) + 1j * np.arange(4)
    write_mdf(
        path,
        {
            "/a/str": "hello",
            "/a/flag": True,
            "/a/mask": np.array([True, False]),
            "/a/int": 3,
            "/a/float": 2.5,
            "/a/cplx": z,
            "/a/f32": np.ones(2, np.float32),
            "/a/strs": ["x", "yz"],
        },
    )
    assert not (tmp_path / "conv.mdf.tmp").exists()  # atomic: written aside, then moved
    with h5py.File(path, "r") as h5:
        assert h5["/a/str"].dtype == np.dtype("S5") and h5["/a/str"][()] == b"hello"
        assert h5["/a/flag"].dtype == np.int8 and h5["/a/mask"].dtype == np.int8
        assert h5["/a/int"].dtype == np.int64 and h5["/a/float"].dtype == np.float64
        assert h5["/a/f32"].dtype == np.float32
        ctype = h5["/a/cplx"].id.get_type()
        assert isinstance(ctype, h5py.h5t.TypeCompoundID)
        assert [ctype.get_member_name(i) for i in range(2)] == [b"r", b"i"]
        assert h5["/version"][()] == b"2.1.0" and len(h5["/uuid"][()]) == 36
        assert h5["/time"][()].startswith(b"20")
        assert h5["/a/strs"].dtype == np.dtype("S2")
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5["/a/cplx"][()], z)


def test_it_leaves_no_file_when_a_write_fails(tmp_path):
    folder = tmp_path / "out"  # tmp_path itself is shared with the project-wide fixtures
    folder.mkdir()
    with pytest.raises(MDFError, match="object array"):
        write_mdf(folder / "bad.mdf", {"/x": np.array([1, "a", None], dtype=object)})
    assert list(folder.iterdir()) == []


def test_it_round_trips_a_reconstruction(tmp_path):
    path = tmp_path / "reco.mdf"
    rng = np.random.default_rng(11)
    data = rng.random((2, 24, 1))
    write_reconstruction(
        path,
        data,
        size=(4, 3, 2),
        field_of_view_m=(0.04, 0.03, 0.02),
        field_of_view_center_m=(0.0, 0.01, 0.0),
        parameters={"solver": "kaczmarz", "lambda_": 1e-3, "frames": (0, 10)},
    )
    with MDFFile(path) as f:
        assert f.kind == "reconstruction" and f.version == "2.1.0"
        out, meta = f.reconstruction()
        positions = f.field("/reconstruction/positions")
        assert f.field("/reconstruction/isOverscanRegion").tolist() == [0] * 24
    assert out.dtype == np.float32 and out.shape == (2, 24, 1)
    np.testing.assert_allclose(out, data, rtol=1e-6)
    assert meta["size"] == [4, 3, 2] and meta["unit"] == "mol/L" and meta["order"] == "xyz"
    assert meta["parameters"] == {"solver": "kaczmarz", "lambda_": 1e-3, "frames": [0, 10]}
    np.testing.assert_allclose(meta["fieldOfView"], [0.04, 0.03, 0.02])
    # voxel centres, x fastest: voxel 1 is one x step (1 cm) from voxel 0; voxel 4 one y step
    np.testing.assert_allclose(positions[0], [-0.015, 0.0, -0.005], atol=1e-15)
    np.testing.assert_allclose(positions[1] - positions[0], [0.01, 0, 0], atol=1e-15)
    np.testing.assert_allclose(positions[4] - positions[0], [0, 0.01, 0], atol=1e-15)
    np.testing.assert_allclose(positions[12] - positions[0], [0, 0, 0.01], atol=1e-15)


def test_it_refuses_a_reconstruction_whose_voxels_do_not_fit_the_grid(tmp_path):
    with pytest.raises(ValueError, match=r"data has 10 voxels but size \[4, 3, 2\] holds 24"):
        write_reconstruction(
            tmp_path / "r.mdf",
            np.zeros((1, 10, 1)),
            size=(4, 3, 2),
            field_of_view_m=(1, 1, 1),
            field_of_view_center_m=(0, 0, 0),
            parameters={},
        )
    assert not (tmp_path / "r.mdf").exists()
