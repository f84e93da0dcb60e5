"""validate() reports a file whose HDF5 structure is damaged as ``corrupt`` and
a dataset whose stored bytes cannot be decoded as ``unreadable_data``, naming
the dataset; never ``internal_error``, never an exception."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from recon.validate import Problem, validate
from tests.recon.test_mdf_factories import write_time_measurement


def object_header_address(path: Path, group: str, name: str) -> int:
    with h5py.File(path, "r") as h5:
        return int(h5py.h5g.get_objinfo(h5[group].id, name.encode()).objno[0])


def test_it_reports_a_damaged_object_header_as_corrupt(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    addr = object_header_address(path, "/acquisition", "numFrames")
    blob = bytearray(path.read_bytes())
    assert blob[addr] == 1  # version 1 object header
    blob[addr] = 0x7F
    path.write_bytes(bytes(blob))
    report = validate(path)
    assert (report.valid, report.kind, report.version) == (False, None, None)
    assert [(p.code, p.path) for p in report.problems] == [("corrupt", "")]
    message = report.problems[0].message
    assert message.startswith(f"{path}: corrupt HDF5 file ({len(blob)} bytes): ")
    assert "bad object header version number" in message


def compress_and_damage(path: Path, name: str) -> None:
    """Store ``name`` as one gzip chunk, then overwrite the middle of that chunk's bytes."""
    with h5py.File(path, "r+") as h5:
        values = np.atleast_1d(h5[name][()])
        del h5[name]
        h5.create_dataset(name, data=values, chunks=values.shape, compression="gzip")
        chunk = h5[name].id.get_chunk_info(0)
    blob = bytearray(path.read_bytes())
    start = chunk.byte_offset + 2
    stop = chunk.byte_offset + chunk.size
    blob[start:stop] = bytes(b ^ 0xA5 for b in blob[start:stop])
    path.write_bytes(bytes(blob))


def test_it_reports_samples_it_cannot_decode(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    compress_and_damage(path, "/measurement/data")
    report = validate(path)
    assert report.kind == "measurement"
    assert [(p.code, p.path) for p in report.problems] == [("unreadable_data", "/measurement/data")]
    assert report.problems[0].message.startswith("cannot read /measurement/data: ")


def test_it_reports_a_header_number_it_cannot_decode(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    compress_and_damage(path, "/acquisition/receiver/bandwidth")
    report = validate(path)
    assert [(p.code, p.path) for p in report.problems] == [("unreadable_data", "/acquisition/receiver/bandwidth")]
    assert report.problems[0].message.startswith("cannot read /acquisition/receiver/bandwidth: ")


def test_it_reports_a_background_mask_it_cannot_decode(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path, N=400)
    compress_and_damage(path, "/measurement/isBackgroundFrame")
    report = validate(path)
    assert [(p.code, p.path) for p in report.problems] == [("unreadable_data", "/measurement/isBackgroundFrame")]


def test_it_reports_reconstruction_data_that_is_a_group(tmp_path):
    from recon.mdf import write_reconstruction

    path = tmp_path / "r.mdf"
    write_reconstruction(
        path,
        np.ones((1, 8, 1)),
        size=(2, 2, 2),
        field_of_view_m=(1, 1, 1),
        field_of_view_center_m=(0, 0, 0),
        parameters={},
    )
    with h5py.File(path, "r+") as h5:
        del h5["/reconstruction/data"]
        h5.create_group("/reconstruction/data")
    report = validate(path)
    assert report.kind == "reconstruction"
    assert report.problems == [
        Problem("missing_field", "/reconstruction/data", "required field /reconstruction/data is missing")
    ]


def test_a_scan_without_drive_strength_is_accepted(tmp_path):
    path = tmp_path / "m.mdf"
    write_time_measurement(path)
    with h5py.File(path, "r+") as h5:
        del h5["/acquisition/drivefield/strength"]
    assert validate(path).problems == []


def test_it_reports_a_calibration_without_its_field_of_view_centre(tmp_path):
    from tests.recon.test_mdf_factories import write_fast_calibration

    path = tmp_path / "c.mdf"
    write_fast_calibration(path)
    with h5py.File(path, "r+") as h5:
        del h5["/calibration/fieldOfViewCenter"]
    assert validate(path).problems == [
        Problem(
            "missing_field",
            "/calibration/fieldOfViewCenter",
            "required field /calibration/fieldOfViewCenter is missing",
        )
    ]


def test_it_reports_a_sparsity_flag_without_subsampling_indices(tmp_path):
    from tests.recon.test_mdf_factories import write_fast_calibration

    path = tmp_path / "c.mdf"
    write_fast_calibration(path)
    with h5py.File(path, "r+") as h5:
        h5["/measurement/isSparsityTransformed"][()] = 1
    assert validate(path).problems == [
        Problem(
            "missing_field",
            "/measurement/subsamplingIndices",
            "required field /measurement/subsamplingIndices is missing",
        )
    ]
