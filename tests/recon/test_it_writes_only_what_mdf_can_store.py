"""write_mdf and write_reconstruction store Python values as MDF types, refuse what MDF cannot hold
(leaving no file behind), and reconstruction() refuses images it cannot read back."""

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from recon.mdf import MDFError, MDFFile, voxel_positions, write_mdf, write_reconstruction

GRID: dict[str, Any] = {
    "size": (2, 2, 1),
    "field_of_view_m": [0.02, 0.02, 0.01],
    "field_of_view_center_m": [0.0, 0.0, 0.0],
}


def test_it_stores_python_values_as_mdf_types(tmp_path):
    path = tmp_path / "v.mdf"
    write_mdf(
        path,
        {
            "/_complex": 1.5 - 2j,
            "/_list": [1, 2, 3],
            "/_floats": (0.5, 1.5),
            "/_unicode": np.array(["Fe", "Ø"]),
            "/_skipped": None,
        },
    )
    with h5py.File(path, "r") as h5:
        assert h5["/_complex"][()] == 1.5 - 2j
        assert h5["/_list"].dtype == np.int64
        np.testing.assert_array_equal(h5["/_list"][()], [1, 2, 3])
        assert h5["/_floats"].dtype == np.float64
        assert h5["/_unicode"].dtype.kind == "S"
        assert [v.decode() for v in h5["/_unicode"][()]] == ["Fe", "Ø"]
        assert "/_skipped" not in h5


def test_it_refuses_a_relative_field_name(tmp_path):
    with pytest.raises(MDFError, match=r"^field name 'measurement/data' must be an absolute path starting with '/'$"):
        write_mdf(tmp_path / "r.mdf", {"measurement/data": np.zeros(3)})
    assert sorted(tmp_path.glob("*.mdf*")) == []  # neither the file nor its .tmp


def test_it_leaves_no_file_when_a_value_cannot_be_stored(tmp_path):
    with pytest.raises(MDFError, match=r"^cannot store /_mixed: object array"):
        write_mdf(tmp_path / "o.mdf", {"/_mixed": [1, "a", None]})
    assert sorted(tmp_path.glob("*.mdf*")) == []  # neither the file nor its .tmp


def test_it_compresses_large_datasets_and_reads_them_back(tmp_path):
    data = np.arange(2 * 2**20 // 8, dtype=np.float64)  # 2 MiB, above the chunking threshold
    write_mdf(tmp_path / "g.mdf", {"/_big": data}, compression="gzip")
    with h5py.File(tmp_path / "g.mdf", "r") as h5:
        assert h5["/_big"].compression == "gzip"
        np.testing.assert_array_equal(h5["/_big"][()], data)


def test_it_keeps_numpy_values_of_the_parameters(tmp_path):
    params = {
        "weights": np.array([1.0, 2.0]),
        "lambda": np.float32(0.25),
        "rows": (3, 4),
        "channels": {1},
        "source": Path("/data/scan.mdf"),
    }
    write_reconstruction(tmp_path / "r.mdf", np.arange(4.0), parameters=params, **GRID)
    with MDFFile(tmp_path / "r.mdf") as f:
        data, meta = f.reconstruction()
    assert data.shape == (1, 4, 1)
    assert meta["parameters"] == {
        "weights": [1.0, 2.0],
        "lambda": 0.25,
        "rows": [3, 4],
        "channels": [1],
        "source": "/data/scan.mdf",
    }


def test_it_refuses_parameters_it_cannot_serialise(tmp_path):
    with pytest.raises(TypeError, match=r"^object is not JSON serialisable$"):
        write_reconstruction(tmp_path / "r.mdf", np.arange(4.0), parameters={"x": object()}, **GRID)
    assert sorted(tmp_path.glob("*.mdf*")) == []  # neither the file nor its .tmp


@pytest.mark.parametrize(
    "data, shape", [(np.arange(4.0), (1, 4, 1)), (np.ones((3, 4)), (3, 4, 1)), (np.ones((2, 4, 2)), (2, 4, 2))]
)
def test_it_stores_images_as_frames_voxels_channels(tmp_path, data, shape):
    write_reconstruction(tmp_path / "r.mdf", data, parameters={}, **GRID)
    with MDFFile(tmp_path / "r.mdf") as f:
        stored, _ = f.reconstruction()
    assert stored.shape == shape
    np.testing.assert_array_equal(stored.ravel(), np.asarray(data, dtype=np.float32).ravel())


@pytest.mark.parametrize(
    "data, size, message",
    [
        (np.ones(4, complex), (2, 2, 1), r"^reconstruction data must be real numbers, got dtype complex128$"),
        (np.ones((1, 4, 1, 1)), (2, 2, 1), r"^reconstruction data must be Q x P x S, got shape \(1, 4, 1, 1\)$"),
        (np.ones(4), (2, 2), r"^size needs 3 values \(x, y, z\), got \[2, 2\]$"),
        (np.ones(5), (2, 2, 1), r"^data has 5 voxels but size \[2, 2, 1\] holds 4$"),
    ],
)
def test_it_refuses_images_that_do_not_fit_the_grid(tmp_path, data, size, message):
    with pytest.raises(ValueError, match=message):
        write_reconstruction(tmp_path / "r.mdf", data, parameters={}, **{**GRID, "size": size})
    assert sorted(tmp_path.glob("*.mdf*")) == []  # neither the file nor its .tmp


def test_it_refuses_a_grid_without_three_axes():
    with pytest.raises(ValueError, match=r"^size, field of view and centre need 3 values each, got 3, 2, 3$"):
        voxel_positions((2, 2, 1), [0.02, 0.02], [0, 0, 0])


def _reconstruction_refusal(path: Path, **replace) -> str:
    write_reconstruction(path, np.arange(4.0), parameters={"solver": "kaczmarz"}, **GRID)
    with h5py.File(path, "r+") as h5:
        for name, value in replace.items():
            del h5[name]
            h5[name] = value
    with MDFFile(path) as f, pytest.raises(MDFError) as exc:
        f.reconstruction()
    return str(exc.value)[len(str(path)) + 2 :]


def test_it_refuses_a_reconstruction_of_complex_values(tmp_path):
    message = _reconstruction_refusal(tmp_path / "r.mdf", **{"/reconstruction/data": np.ones((1, 4, 1), complex)})
    assert message == "/reconstruction/data has dtype complex128, expected real numbers"


def test_it_refuses_a_reconstruction_without_the_channel_axis(tmp_path):
    message = _reconstruction_refusal(tmp_path / "r.mdf", **{"/reconstruction/data": np.ones((1, 4), "f4")})
    assert message == "/reconstruction/data has shape (1, 4), expected Q x P x S"


def test_it_refuses_parameters_that_are_not_json(tmp_path):
    message = _reconstruction_refusal(tmp_path / "r.mdf", **{"/reconstruction/_parameters": np.bytes_("{solver")})
    assert message.startswith("/reconstruction/_parameters is not valid JSON: ")


def test_it_refuses_a_voxel_count_that_disagrees_with_the_size(tmp_path):
    message = _reconstruction_refusal(tmp_path / "r.mdf", **{"/reconstruction/size": np.array([3, 2, 1])})
    assert message == "/reconstruction/data has 4 voxels but size [3, 2, 1] holds 6"


def test_it_reads_an_integer_image_as_float(tmp_path):
    path = tmp_path / "r.mdf"
    write_reconstruction(path, np.arange(4.0), parameters={}, **GRID)
    with h5py.File(path, "r+") as h5:
        del h5["/reconstruction/data"]
        h5["/reconstruction/data"] = np.arange(4, dtype=np.int16).reshape(1, 4, 1)
    with MDFFile(path) as f:
        data, meta = f.reconstruction()
    assert data.dtype == np.float64
    np.testing.assert_array_equal(data.ravel(), [0.0, 1.0, 2.0, 3.0])
    assert json.dumps(meta["parameters"]) == "{}"


def test_it_raises_the_filesystem_error_when_the_folder_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_mdf(tmp_path / "absent" / "m.mdf", {"/_x": 1})
    assert not (tmp_path / "absent").exists()
