"""replay: every frame of the measurement arrives exactly once, in order, with its bytes,
its background flag and its acquired_at; the header carries the file's MDF fields."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.bridge.measurements import write_measurement


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_every_frame_arrives_once_in_order_with_its_flag_and_bytes(tmp_path, server, run_bridge, dtype):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=40, background=(4, 5), dtype=dtype)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 0, err
    session = server.session()
    assert session.status == "ended"
    np.testing.assert_array_equal(server.recorded(), data)
    assert [session.background[n] for n in range(40)] == is_bg.tolist()
    assert all(count == 1 for count in session.record_writes.values())
    assert [first for first, _ in server.messages] == sorted({first for first, _ in server.messages})
    assert summary["frames_sent"] == 40 and summary["session"] == "41" and summary["scan"] == 77
    assert summary["retries"] == 0 and summary["duration_s"] > 0 and summary["mean_rate_fps"] > 0
    times = [session.acquired_at[n] for n in range(40)]
    assert times == sorted(times)
    header = session.header
    assert header["protocol"] == "mpi-live/1" and header["dtype"] == dtype
    assert header["source"]["kind"] == "replay" and header["source"]["filename"] == "scan.mdf"
    assert header["source"]["measurement_uuid"]
    fields = header["fields"]
    assert fields["/acquisition/drivefield/divider"] == [[51], [48]]
    assert fields["/acquisition/receiver/numSamplingPoints"] == 816
    assert fields["/scanner/topology"] == "FFP"
    assert all(p.startswith(("/study/", "/experiment/", "/scanner/", "/acquisition/", "/tracer/")) for p in fields)
    assert server.requests[-1][:2] == ("POST", "/api/v1/live-sessions/41/end/")


def test_wide_and_unsigned_samples_travel_as_a_wire_type_that_holds_them(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, _ = write_measurement(path, frames=6, dtype="uint16")

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 0, err
    assert server.session().header["dtype"] == "int32"
    np.testing.assert_array_equal(server.recorded(), data.astype(np.int32))


def test_a_fast_frame_axis_file_is_streamed_in_frame_order(tmp_path, server, run_bridge):
    path = tmp_path / "transposed.mdf"
    data, is_bg = write_measurement(path, frames=12)
    with h5py.File(path, "r+") as h5:
        del h5["/measurement/data"]
        h5["/measurement/data"] = np.moveaxis(data, 0, 3)  # J x C x V x N
        h5["/measurement/isFastFrameAxis"][()] = 1

    rc, _, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 0, err
    np.testing.assert_array_equal(server.recorded(), data)
    assert [server.session().background[n] for n in range(12)] == is_bg.tolist()


def test_max_frames_and_the_message_size_cap(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, _ = write_measurement(path, frames=50)
    frame_bytes = data[0].nbytes

    # a 0.02 MiB cap holds 3 frames of 6,528 bytes
    rc, summary, err = run_bridge(
        "replay", path, server.url, "--speed", "0", "--max-frames", "20", "--max-message-mb", "0.02"
    )

    assert rc == 0, err
    assert summary["frames_sent"] == 20
    np.testing.assert_array_equal(server.recorded(), data[:20])
    assert max(count for _, count in server.messages) == int(0.02 * 2**20 // frame_bytes) == 3
    assert server.messages == [(n, min(3, 20 - n)) for n in range(0, 20, 3)]
