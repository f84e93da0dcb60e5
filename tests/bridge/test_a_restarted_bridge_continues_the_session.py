"""A bridge that gave up (or was stopped) continues the same session when started again with
the same --state file: it sends the saved header again (start is idempotent) and goes on
from the server's next_frame, so the recording has every frame once."""

from __future__ import annotations

import json

import h5py
import numpy as np

from tests.bridge.measurements import write_measurement

FRAMES = 30


def test_a_second_run_with_the_state_file_continues_from_next_frame(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    state = tmp_path / "bridge-state.json"
    server.faults = dict.fromkeys(range(2, 1000), "503")  # down after frames 0..7
    args = ("--speed", "0", "--max-message-mb", "0.025", "--state", str(state))

    rc, summary, err = run_bridge("replay", path, server.url, *args, "--retry-for", "0.5")
    assert rc == 1 and "gave up" in err and summary["frames_sent"] == 8
    saved = json.loads(state.read_text())
    assert saved["session"] == "41" and saved["header"] == server.session().header

    server.faults = {}
    rc, summary, err = run_bridge("replay", path, server.url, *args)

    assert rc == 0, err
    assert "continuing session 41 with its saved header" in err
    assert summary["frames_sent"] == FRAMES and summary["resumed_from"] == 8
    np.testing.assert_array_equal(server.recorded(), data)
    assert [server.session().background[n] for n in range(FRAMES)] == is_bg.tolist()
    assert set(server.session().record_writes.values()) == {1}
    assert [m for m in server.messages if m[0] >= 8][0] == (8, 4)
    starts = [r for r in server.requests if r[1].endswith("/start/")]
    assert [status for _, _, status in starts] == [201, 200]  # the second start: the identical header
    # frames keep the original timeline: stamped from the first run's started_at
    assert server.session().header["started_at"] == saved["header"]["started_at"]


def test_without_the_state_file_the_second_run_is_refused_as_a_different_stream(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=FRAMES)
    server.faults = dict.fromkeys(range(2, 1000), "503")
    rc, _, _ = run_bridge("replay", path, server.url, "--speed", "0", "--max-message-mb", "0.025", "--retry-for", "0.3")
    assert rc == 1

    server.faults = {}
    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0")

    assert rc == 1
    assert "(409 stream_header_changed)" in err and summary["error"]["code"] == "stream_header_changed"


def test_a_state_file_of_another_measurement_is_refused(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=5)
    state = tmp_path / "state.json"
    rc, _, err = run_bridge("replay", path, server.url, "--speed", "0", "--state", str(state))
    assert rc == 0, err
    with h5py.File(path, "r+") as h5:
        h5["/acquisition/numAverages"][()] = 7

    rc, _, err = run_bridge("replay", path, server.url, "--speed", "0", "--state", str(state))

    assert rc == 1
    assert "the saved stream header of session 41 differs from this measurement's (fields)" in err


def test_a_state_file_that_is_not_one_is_named(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=5)
    state = tmp_path / "state.json"
    state.write_text("{not json")

    rc, _, err = run_bridge("replay", path, server.url, "--speed", "0", "--state", str(state))

    assert rc == 1 and f"{state}: not a bridge state file" in err
    assert server.session().header is None
