"""MDFFile refuses bad files and bad requests with one specific MDFError line."""

import os

import h5py
import numpy as np
import pytest

from recon.mdf import MDFError, MDFFile, write_mdf
from tests.recon.test_mdf_factories import write_fast_calibration, write_time_measurement


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_it_names_a_missing_path(tmp_path):
    with pytest.raises(MDFError, match="no such file") as exc:
        MDFFile(tmp_path / "absent.mdf")
    _one_line(exc)


def test_it_refuses_a_directory(tmp_path):
    with pytest.raises(MDFError, match="is a directory"):
        MDFFile(tmp_path)


def test_it_refuses_an_empty_file(tmp_path):
    (tmp_path / "e.mdf").write_bytes(b"")
    with pytest.raises(MDFError, match=r"empty file \(0 bytes\)"):
        MDFFile(tmp_path / "e.mdf")


def test_it_refuses_random_bytes(tmp_path):
    (tmp_path / "r.mdf").write_bytes(os.urandom(4096))
    with pytest.raises(MDFError, match=r"not an HDF5 file .*4096 bytes"):
        MDFFile(tmp_path / "r.mdf")


def test_it_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "t.mdf"
    write_time_measurement(path, N=50, V=256)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MDFError, match="truncated") as exc:
        MDFFile(path)
    _one_line(exc)


def test_it_refuses_a_version_1_file(tmp_path):
    path = tmp_path / "v1.mdf"
    write_mdf(path, {"/measurement/data": np.zeros((1, 1, 1, 4))}, version="1.0.5")
    with pytest.raises(MDFError, match=r"version '1.0.5' is not supported"):
        MDFFile(path)


def test_it_names_inconsistent_frame_counts(tmp_path):
    path = tmp_path / "n.mdf"
    write_time_measurement(path, N=6)
    with h5py.File(path, "r+") as h5:
        h5["/acquisition/numFrames"][()] = 7
    with pytest.raises(MDFError, match=r"holds 6 frames in shape \(6, 2, 3, 16\), but numFrames is 7"):
        MDFFile(path)


def test_it_names_out_of_range_selections(tmp_path):
    path = tmp_path / "s.mdf"
    write_time_measurement(path, N=6, C=3)
    with MDFFile(path) as f:
        with pytest.raises(MDFError, match="channel index 3 is out of range: the file has 3 channels"):
            f.spectra(channels=[3])
        with pytest.raises(MDFError, match="frame index 9 is out of range: the file has 6 frames"):
            f.spectra(frames=[0, 9])
        with pytest.raises(MDFError, match="system_matrix\\(\\) needs a calibration file; this file is a measurement"):
            f.system_matrix()


def test_it_refuses_string_data(tmp_path):
    path = tmp_path / "str.mdf"
    write_time_measurement(path)
    with h5py.File(path, "r+") as h5:
        del h5["/measurement/data"]
        h5["/measurement/data"] = np.array([b"abc"] * 4)
    with pytest.raises(MDFError, match="has dtype \\|S3, expected numbers"):
        MDFFile(path)


def test_it_closes_the_file_after_the_with_block(tmp_path):
    path = tmp_path / "c.mdf"
    write_fast_calibration(path)
    with MDFFile(path) as f:
        pass
    assert not f._h5.id.valid
