"""open_h5/MDFFile refuse HDF5 objects that reach into other files or exceed the reader's limits,
and accept the harmless ones (soft links, compact and empty datasets)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from recon.mdf import MDFError, MDFFile, MDFLimitError, ReadLimits, check_declared_sizes, open_h5
from tests.recon.test_mdf_factories import write_time_measurement


def _measurement(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "m.mdf"
    t = write_time_measurement(path, N=4, J=1, C=2, V=16)
    return path, t


def test_it_refuses_a_dataset_kept_in_external_raw_storage(tmp_path):
    path, _ = _measurement(tmp_path)
    (tmp_path / "raw.bin").write_bytes(np.arange(16, dtype="f4").tobytes())
    with h5py.File(path, "r+") as h5:
        h5.create_dataset("/_raw", shape=(16,), dtype="f4", external=[(str(tmp_path / "raw.bin"), 0, 64)])
    with pytest.raises(MDFLimitError) as exc:
        MDFFile(path)
    assert exc.value.code == "external_reference"
    assert exc.value.dataset == "/_raw"
    assert str(exc.value) == "/_raw keeps its data in other files (external storage): refused"


def test_it_refuses_a_virtual_dataset(tmp_path):
    path, _ = _measurement(tmp_path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = np.arange(4, dtype="f4")
    with h5py.File(path, "r+") as h5:
        layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "x", shape=(4,))
        h5.create_virtual_dataset("/_virtual", layout)
    with pytest.raises(MDFLimitError) as exc:
        MDFFile(path)
    assert exc.value.code == "external_reference"
    assert exc.value.dataset == "/_virtual"
    assert "(a virtual dataset): refused" in str(exc.value)


def test_it_refuses_an_external_link(tmp_path):
    path, _ = _measurement(tmp_path)
    with h5py.File(path, "r+") as h5:
        h5["/_elsewhere"] = h5py.ExternalLink("other.h5", "/x")
    with pytest.raises(MDFLimitError) as exc:
        MDFFile(path)
    assert exc.value.code == "external_reference"
    assert exc.value.dataset == "/_elsewhere"
    assert str(exc.value) == "/_elsewhere links to other.h5:/x in another file: refused"


def test_it_follows_a_soft_link_to_data_of_the_same_file(tmp_path):
    path, t = _measurement(tmp_path)
    with h5py.File(path, "r+") as h5:
        h5["/_alias"] = h5py.SoftLink("/measurement/data")
    with MDFFile(path) as f:
        assert f.has("/_alias")
        np.testing.assert_array_equal(f.field("/_alias"), t)


def test_it_accepts_compact_and_empty_datasets(tmp_path):
    path, _ = _measurement(tmp_path)
    with h5py.File(path, "r+") as h5:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((3,))
        h5py.h5d.create(h5.id, b"_compact", h5py.h5t.NATIVE_DOUBLE, space, dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, np.array([1.0, 2.0, 3.0])
        )
        h5.create_dataset("/_empty", data=h5py.Empty("f8"))
    with MDFFile(path) as f:
        np.testing.assert_array_equal(f.field("/_compact"), [1.0, 2.0, 3.0])
        assert f.num_frames == 4
        assert f.field("/_empty") == h5py.Empty("f8")
        assert f.field("/tracer/name") == ["Perimag"]


def test_it_refuses_too_many_attributes_on_the_root(tmp_path):
    path, _ = _measurement(tmp_path)
    with h5py.File(path, "r+") as h5:
        for i in range(3):
            h5.attrs[f"a{i}"] = i
    with pytest.raises(MDFLimitError) as exc:
        MDFFile(path, limits=ReadLimits(max_attributes=2))
    assert (exc.value.code, exc.value.dataset) == ("too_many_attributes", "/")
    assert str(exc.value) == "the file holds more than 2 attributes"


def test_it_refuses_too_many_attributes_summed_over_objects(tmp_path):
    path, _ = _measurement(tmp_path)
    with h5py.File(path, "r+") as h5:
        for i in range(3):
            h5["/acquisition"].attrs[f"a{i}"] = i
    with h5py.File(path, "r") as h5, pytest.raises(MDFLimitError) as exc:
        check_declared_sizes(h5, ReadLimits(max_attributes=2))
    assert (exc.value.code, exc.value.dataset) == ("too_many_attributes", "/acquisition")
    MDFFile(path, limits=ReadLimits(max_attributes=3)).close()  # at the limit: accepted


def test_it_refuses_one_dataset_declaring_more_than_the_limit(tmp_path):
    path, _ = _measurement(tmp_path)  # /measurement/data: 4*1*2*16 float32 = 512 bytes
    with pytest.raises(MDFLimitError) as exc:
        open_h5(path, ReadLimits(max_declared_bytes=511))
    assert (exc.value.code, exc.value.dataset) == ("declared_too_large", "/measurement/data")
    assert "declares 512 bytes" in str(exc.value) and "limit of 511 bytes" in str(exc.value)


def test_it_names_a_corrupt_file_that_is_not_truncated(tmp_path):
    path = tmp_path / "c.mdf"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 4088)
    with pytest.raises(MDFError, match=r"corrupt HDF5 file \(4096 bytes\)") as exc:
        MDFFile(path)
    assert "\n" not in str(exc.value)


def test_it_refuses_datasets_that_together_declare_more_than_the_limit(tmp_path):
    path, _ = _measurement(tmp_path)  # the largest dataset, /measurement/data, declares 512 bytes
    with pytest.raises(MDFLimitError) as exc:
        open_h5(path, ReadLimits(max_declared_bytes=512))
    assert exc.value.code == "declared_too_large"
    assert str(exc.value).startswith(f"the datasets up to {exc.value.dataset} declare ")
    assert str(exc.value).endswith("bytes, more than the limit of 512 bytes")
