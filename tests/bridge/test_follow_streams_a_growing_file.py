"""follow: a scanner appends frames to an MDF file (HDF5 SWMR, or reopened per block); the
bridge, another process, sends each new frame once and in order, then ends the session after
--idle-end seconds without growth, or as soon as /acquisition/numFrames frames are there."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.bridge.fake_server import TOKEN
from tests.bridge.measurements import GrowingMeasurement, write_measurement

REPO = Path(__file__).resolve().parents[2]
FRAMES = 24
BLOCK = 4
BLOCK_EVERY_S = 0.15


def _follow(path: Path, url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "follow",
            str(path),
            "--url",
            url,
            "--token",
            TOKEN,
            "--session",
            "41",
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_start(server) -> None:
    deadline = time.monotonic() + 30
    while server.session().header is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _write_in_blocks(writer: GrowingMeasurement, data: np.ndarray, is_bg: np.ndarray, times: list) -> None:
    for start in range(0, len(data), BLOCK):
        time.sleep(BLOCK_EVERY_S)
        writer.append(data[start : start + BLOCK], is_bg[start : start + BLOCK])
        times.append(time.time())
    writer.close()


@pytest.mark.parametrize("swmr", [True, False])
def test_follow_sends_every_appended_frame_once_and_ends_when_idle(tmp_path, server, swmr):
    template = tmp_path / "template.mdf"
    data, is_bg = write_measurement(template, frames=FRAMES, background=(4, 4), dtype="int16")
    path = tmp_path / "growing.mdf"
    writer = GrowingMeasurement(path, template, swmr=swmr)
    bridge = _follow(path, server.url, "--idle-end", "1.5", "--poll-ms", "20")
    written: list[float] = []
    thread = threading.Thread(target=_write_in_blocks, args=(writer, data, is_bg, written))
    _wait_for_start(server)
    thread.start()
    out, err = bridge.communicate(timeout=60)
    thread.join()

    assert bridge.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames_sent"] == FRAMES and summary["scan"] == 77
    session = server.session()
    np.testing.assert_array_equal(server.recorded(), data)
    assert [session.background[n] for n in range(FRAMES)] == is_bg.tolist()
    assert set(session.record_writes.values()) == {1}
    assert session.header["source"]["kind"] == "follow" and session.header["dtype"] == "int16"
    # each block was seen and sent soon after it was written (poll 20 ms, generous slack)
    for block, written_at in enumerate(written):
        first = block * BLOCK
        assert written_at - 0.05 <= session.acquired_at[first] <= written_at + 1.0
        assert session.received_at[first] <= written_at + 1.5
    # ended by --idle-end after the last block
    ended_at = session.header["started_at"] + summary["duration_s"]
    assert ended_at >= written[-1] + 1.5 - 0.05


def test_follow_ends_as_soon_as_the_declared_number_of_frames_is_there(tmp_path, server):
    template = tmp_path / "template.mdf"
    data, is_bg = write_measurement(template, frames=FRAMES)
    path = tmp_path / "growing.mdf"
    writer = GrowingMeasurement(path, template, swmr=True, num_frames=FRAMES)
    bridge = _follow(path, server.url, "--idle-end", "30", "--poll-ms", "20")
    thread = threading.Thread(target=_write_in_blocks, args=(writer, data, is_bg, []))
    started = time.monotonic()
    thread.start()
    out, err = bridge.communicate(timeout=60)
    thread.join()

    assert bridge.returncode == 0, err
    assert time.monotonic() - started < 10  # not the 30 s idle end
    assert json.loads(out.strip().splitlines()[-1])["frames_sent"] == FRAMES
    np.testing.assert_array_equal(server.recorded(), data)
    assert server.session().status == "ended"


def test_follow_waits_for_the_file_then_gives_up_with_a_clear_error(tmp_path, server):
    bridge = _follow(tmp_path / "never.mdf", server.url, "--wait-for-file", "0.3")
    out, err = bridge.communicate(timeout=30)

    assert bridge.returncode == 2
    assert "never.mdf: no such file" in err.strip().splitlines()[-1]
    assert server.session().header is None


def test_follow_of_a_file_that_no_longer_grows_sends_it_and_ends(tmp_path, server, run_bridge):
    """In-process: a finished file (its numFrames reached) is sent at once and the session ended;
    with numFrames 0 (unknown) the end comes after --idle-end."""
    path = tmp_path / "done.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)

    rc, summary, err = run_bridge("follow", path, server.url, "--idle-end", "30", "--max-message-mb", "0.025")

    assert rc == 0, err
    assert summary["frames_sent"] == FRAMES and summary["duration_s"] < 10
    np.testing.assert_array_equal(server.recorded(), data)
    assert [server.session().background[n] for n in range(FRAMES)] == is_bg.tolist()


def test_follow_ends_after_idle_end_when_the_count_is_unknown(tmp_path, server, run_bridge):
    path = tmp_path / "open.mdf"
    data, _ = write_measurement(path, frames=6)
    with h5py.File(path, "r+") as h5:
        h5["/acquisition/numFrames"][()] = 0
    started = time.monotonic()

    rc, summary, err = run_bridge("follow", path, server.url, "--idle-end", "0.5", "--poll-ms", "20")

    assert rc == 0, err
    assert 0.5 <= time.monotonic() - started < 10
    assert summary["frames_sent"] == 6 and summary["speed"] is None
    np.testing.assert_array_equal(server.recorded(), data)
