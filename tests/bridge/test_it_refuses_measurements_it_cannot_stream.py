"""A measurement the bridge cannot stream ends it before any frame is sent: exit status 2 and
one line on stderr saying why (no traceback). (Samples that turn out NaN are found when their
frames are read, after the start: the operator is told the session stays streaming.)"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.bridge.measurements import write_measurement


def _truncate(path):
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 3)


def _garbage(path):
    path.write_bytes(b"this is not an HDF5 file\n" * 10)


def _empty(path):
    path.write_bytes(b"")


def _edit(**changes):
    def apply(path):
        with h5py.File(path, "r+") as h5:
            for name, value in changes.items():
                key = name.replace("__", "/")
                if key in h5:
                    del h5[key]
                if value is not None:
                    h5[key] = value

    return apply


CASES = [
    (_truncate, "truncated HDF5 file"),
    (_garbage, "not an HDF5 file (no HDF5 signature"),
    (_empty, "empty file (0 bytes)"),
    (_edit(acquisition__receiver__bandwidth=None), "missing /acquisition/receiver/bandwidth"),
    (_edit(measurement__data=None), "no /measurement/data"),
    (_edit(measurement__isFourierTransformed=np.int8(1)), "frequency-domain data"),
    (_edit(measurement__data=np.zeros((4, 1, 2, 409), np.complex64)), "complex samples"),
    (_edit(measurement__data=np.zeros((4, 2, 816), np.float32)), "has 3 dimensions"),
    (_edit(measurement__data=np.zeros((4, 1, 3, 816), np.float32)), "is 4x1x3x816 (N x J x C x V)"),
    (
        _edit(measurement__isFramePermutation=np.int8(1), measurement__framePermutation=np.arange(30)[::-1].copy()),
        "the frames are stored permuted",
    ),
    (_edit(measurement__isBackgroundFrame=np.zeros(7, np.int8)), "isBackgroundFrame has 7 entries for 30 frames"),
    (_edit(acquisition__numAverages=np.int64(0)), "numAverages must be a positive whole number"),
    (_edit(measurement__data=np.full((30, 1, 2, 816), np.nan, np.float32)), "frame 0 has NaN or infinite samples"),
]


@pytest.mark.parametrize("damage, message", CASES)
def test_it_names_the_problem_and_sends_nothing(tmp_path, server, run_bridge, damage, message):
    path = tmp_path / "scan.mdf"
    write_measurement(path)
    damage(path)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 2
    assert message in err
    assert err.startswith("bridge: error: ") and "Traceback" not in err
    if server.session().header is not None:  # found after the start
        assert "the session stays streaming with 0 frames recorded" in err
    assert server.session().frames == {}
    assert not [r for r in server.requests if r[1].endswith(("/frames/", "/end/"))]


def test_an_identity_frame_permutation_is_accepted(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, _ = write_measurement(path, frames=5)
    _edit(measurement__isFramePermutation=np.int8(1), measurement__framePermutation=np.arange(1, 6))(path)

    rc, _, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 0, err
    np.testing.assert_array_equal(server.recorded(), data)


def test_a_missing_file_and_bad_arguments(tmp_path, server, run_bridge, capsys):
    rc, _, err = run_bridge("replay", tmp_path / "nope.mdf", server.url)
    assert rc == 2 and f"{tmp_path / 'nope.mdf'}: no such file" in err

    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=3)
    with pytest.raises(SystemExit) as exit_info:
        run_bridge("replay", path, server.url, "--speed", "-1")
    assert exit_info.value.code == 2
    assert "argument --speed: must be >= 0, got -1" in capsys.readouterr().err

    rc, _, err = run_bridge("replay", path, "ftp://example.org")
    assert rc == 2 and "--url must be an http:// or https:// address" in err


def test_header_fields_json_cannot_carry_are_left_out_and_named(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=3)
    _edit(
        acquisition__receiver__transferFunction=np.ones((2, 409), np.complex64),
        acquisition__offsetField=np.full((1, 1, 3), np.nan),
        acquisition__gradient=np.zeros((1, 1, 3, 3)),
        tracer__injectionTime=np.array([b"2025-01-01T00:00:00"], dtype=h5py.string_dtype()),
    )(path)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 0, err
    fields = server.session().header["fields"]
    assert "/acquisition/receiver/transferFunction" not in fields and "/acquisition/offsetField" not in fields
    assert summary["fields_skipped"] == ["/acquisition/offsetField", "/acquisition/receiver/transferFunction"]
    assert fields["/tracer/injectionTime"] == ["2025-01-01T00:00:00"]
    assert fields["/acquisition/gradient"] == [[[[0.0] * 3] * 3]]
