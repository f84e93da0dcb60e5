"""replay --speed S: frame n is complete (and stamped) at started_at + (n + 1) x duration / S,
is not sent before that, and the whole file takes about frames x duration / S."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tests.bridge.measurements import write_measurement

FRAMES = 24
#: the file's numAverages makes a frame last 0.1 s (306 x 326.4 µs = 99.88 ms)
FRAME_S = 306 * 326.4e-6
#: scheduling slack of a shared 2-core test machine
TOLERANCE_S = 0.5


def test_speed_4_takes_a_quarter_of_the_acquisition_time(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=FRAMES, frame_duration_s=0.1)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "4")

    assert rc == 0, err
    expected = FRAMES * FRAME_S / 4  # 0.6 s
    assert summary["frame_duration_s"] == pytest.approx(FRAME_S)
    assert expected <= summary["duration_s"] <= expected + 2 * TOLERANCE_S
    assert summary["mean_rate_fps"] == pytest.approx(FRAMES / summary["duration_s"], rel=1e-2)
    session = server.session()
    started = session.header["started_at"]
    for n in range(FRAMES):
        complete = started + (n + 1) * FRAME_S / 4
        assert session.acquired_at[n] == pytest.approx(complete, abs=1e-6)
        assert complete - 0.005 <= session.received_at[n] <= complete + 0.05 + TOLERANCE_S  # batch window 50 ms
    assert len(server.messages) < FRAMES  # frames completing within 50 ms travel together
    assert summary["ack_latency_ms"]["max"] < (0.05 + TOLERANCE_S) * 1000


def test_speed_0_sends_as_fast_as_possible(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=FRAMES, frame_duration_s=0.1)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 0, err
    assert summary["duration_s"] < FRAMES * FRAME_S / 4
    assert len(server.messages) == 1  # 24 frames of 6,528 bytes fit one message
    times = [server.session().acquired_at[n] for n in range(FRAMES)]
    assert times == sorted(times)


def test_batch_ms_0_sends_each_frame_as_it_completes(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=8, frame_duration_s=0.1)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "1", "--batch-ms", "0")

    assert rc == 0, err
    assert server.messages == [(n, 1) for n in range(8)]  # 100 ms apart, each sent alone


def test_frame_times_recorded_in_the_file_keep_their_pauses(tmp_path, server, run_bridge):
    """A platform recording carries /measurement/_frameAcquiredAt: replay keeps its timing."""
    path = tmp_path / "recording.mdf"
    write_measurement(path, frames=8, frame_duration_s=0.1)
    times = 1.7e9 + np.array([0.1, 0.2, 0.3, 0.4, 0.9, 1.0, 1.1, 1.2])  # a 0.4 s pause after frame 3
    with h5py.File(path, "r+") as h5:
        h5["/measurement/_frameAcquiredAt"] = times

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "2")

    assert rc == 0, err
    session = server.session()
    started = session.header["started_at"]
    for n in range(8):
        assert session.acquired_at[n] == pytest.approx(started + (times[n] - times[0] + FRAME_S) / 2, abs=1e-6)
        assert session.received_at[n] >= session.acquired_at[n] - 0.005
    assert summary["duration_s"] >= (times[-1] - times[0] + FRAME_S) / 2


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(tmp_path, server, run_bridge):
    server.keepalive_timeout_s = 0.03  # closes each connection 30 ms after its last request
    path = tmp_path / "scan.mdf"
    data, _ = write_measurement(path, frames=10, frame_duration_s=0.1)

    # 100 ms between messages: each goes out on a connection the server has closed meanwhile
    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "1", "--batch-ms", "0")

    assert rc == 0, err
    assert summary["retries"] == 0 and summary["resyncs"] == 0
    assert len(server.messages) == 10
    np.testing.assert_array_equal(server.recorded(), data)
