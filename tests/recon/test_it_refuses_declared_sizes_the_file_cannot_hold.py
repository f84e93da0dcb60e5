"""A small HDF5 file may declare datasets of any size. The readers check every dataset's
declared size against what the file stores and against limits before reading anything,
so a hostile file is refused in well under a second with bounded memory."""

from __future__ import annotations

import hashlib
import time
import tracemalloc

import h5py
import numpy as np
import pytest

from recon.mdf import MDFFile, MDFLimitError, ReadLimits, open_h5, write_mdf
from recon.validate import validate
from tests.recon import hostile
from tests.recon.test_mdf_factories import write_time_measurement

FAST_S = 2.0  # generous: the checks take milliseconds; the unchecked walk took about an hour
PEAK_BYTES = 32 * 2**20


@pytest.fixture
def measurement(tmp_path):
    path = tmp_path / "valid.mdf"
    write_time_measurement(path)
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _timed(call):
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = call()
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, elapsed, peak


def _only(report):
    assert not report.valid
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


def test_it_refuses_a_terabyte_declared_with_nothing_stored_at_once(measurement, tmp_path):
    path = hostile.unallocated_measurement(measurement, tmp_path / "hostile.mdf")
    assert path.stat().st_size < 200_000
    before = _digest(path)

    report, elapsed, peak = _timed(lambda: validate(path))

    problem = _only(report)
    assert problem.code == "unbacked_data"
    assert problem.path == "/measurement/data"
    with h5py.File(path) as h5:
        declared = h5["/measurement/data"].size * 4
    assert declared > 3.99e12
    assert f"declares {declared} bytes" in problem.message and "stores none" in problem.message
    assert elapsed < FAST_S and peak < PEAK_BYTES, (elapsed, peak)
    assert _digest(path) == before  # read-only: the bytes are kept as they came


def test_it_refuses_a_chunked_dataset_declaring_more_than_the_limit(measurement, tmp_path):
    path = hostile.chunked_measurement(measurement, tmp_path / "chunked.mdf")

    report, elapsed, peak = _timed(lambda: validate(path))

    problem = _only(report)
    assert problem.code == "declared_too_large"
    assert problem.path == "/measurement/data"
    assert elapsed < FAST_S and peak < PEAK_BYTES, (elapsed, peak)


@pytest.mark.parametrize("write_one_chunk", [False, True])
def test_it_refuses_a_chunked_dataset_whose_chunks_are_not_all_stored(measurement, tmp_path, write_one_chunk):
    path = hostile.chunked_measurement(
        measurement, tmp_path / "sparse.mdf", elements=6 * 10**6, write_one_chunk=write_one_chunk
    )
    problem = _only(validate(path))
    assert problem.code == "unbacked_data" and problem.path == "/measurement/data"
    assert ("stores none" if not write_one_chunk else "stores 1 of") in problem.message


def test_it_bounds_the_compression_ratio(tmp_path):
    path = tmp_path / "zeros.mdf"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("/zeros", data=np.zeros(2**22, dtype="f8"), chunks=(2**16,), compression="gzip")
    problem = _only(validate(path, limits=ReadLimits(max_compression_ratio=50)))
    assert problem.code == "declared_too_large" and "compressed" in problem.message


def test_it_bounds_the_total_declared_size(measurement):
    problem = _only(validate(measurement, limits=ReadLimits(max_declared_bytes=1000)))
    assert problem.code == "declared_too_large" and "1000" in problem.message
    assert validate(measurement).valid


def test_it_bounds_the_number_of_objects_and_attributes(measurement, tmp_path):
    many = tmp_path / "many.mdf"
    many.write_bytes(measurement.read_bytes())
    with h5py.File(many, "r+") as h5:
        for i in range(60):
            h5.create_group(f"/extra/g{i}").attrs["note"] = i
    assert _only(validate(many, limits=ReadLimits(max_objects=50))).code == "too_many_objects"
    assert _only(validate(many, limits=ReadLimits(max_attributes=50))).code == "too_many_attributes"


def test_it_refuses_references_to_other_files(measurement, tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    linked = tmp_path / "linked.mdf"
    linked.write_bytes(measurement.read_bytes())
    with h5py.File(linked, "r+") as h5:
        h5["/tracer/other"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/data")
    external = tmp_path / "external.mdf"
    external.write_bytes(measurement.read_bytes())
    with h5py.File(external, "r+") as h5:
        h5.create_dataset("/tracer/raw", shape=(512,), dtype="f8", external=[(str(tmp_path / "secret.bin"), 0, 4096)])
    for path in (linked, external):
        problem = _only(validate(path))
        assert problem.code == "external_reference", problem


def test_the_reader_refuses_before_reading_too(measurement, tmp_path):
    path = hostile.unallocated_measurement(measurement, tmp_path / "hostile.mdf")
    started = time.perf_counter()
    with pytest.raises(MDFLimitError) as caught:
        MDFFile(path)
    assert time.perf_counter() - started < FAST_S
    assert caught.value.code == "unbacked_data" and caught.value.dataset == "/measurement/data"


def test_files_the_platform_writes_pass_the_checks_compressed_or_not(tmp_path):
    data = np.random.default_rng(0).standard_normal((40, 1, 2, 2000)).astype(np.float32)
    for compression in (None, "gzip"):
        path = tmp_path / f"m-{compression}.mdf"
        write_mdf(path, {"/x": data}, compression=compression)
        open_h5(path).close()  # no MDFLimitError
