"""replay resumes after a dropped connection, a 503/429 and a 409 frame_gap from the session's
next_frame: the server ends up with every frame exactly once, and after each failure the bridge
sends exactly the frame the server expects next (no gap, no frame the server already has)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bridge.measurements import write_measurement

FRAMES = 30


def _replay(tmp_path, server, run_bridge, *extra: str):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    # 4 frames per message (0.025 MiB / 6,528 bytes), so message k starts at frame 4k
    rc, summary, err = run_bridge("replay", str(path), server.url, "--speed", "0", "--max-message-mb", "0.025", *extra)
    return rc, summary, err, data, is_bg


def _assert_complete(server, data, is_bg):
    session = server.session()
    assert session.status == "ended"
    np.testing.assert_array_equal(server.recorded(), data)
    assert [session.background[n] for n in range(FRAMES)] == is_bg.tolist()
    assert set(session.record_writes.values()) == {1}


@pytest.mark.parametrize("fault", ["drop_mid_body", "503", "429"])
def test_a_failed_message_is_sent_again_from_the_sessions_next_frame(tmp_path, server, run_bridge, fault):
    server.faults = {2: fault}  # the third message (frames 8..11) fails, nothing recorded

    rc, summary, err, data, is_bg = _replay(tmp_path, server, run_bridge)

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    assert summary["retries"] == 1 and summary["resyncs"] == 1 and summary["frames_sent"] == FRAMES
    # the failed message was not recorded; the next one starts exactly where the server is
    assert [first for first, _ in server.messages] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert server.frames_requests == 9
    gets = [r for r in server.requests if r[0] == "GET"]
    assert len(gets) == 1 and gets[0][2] == 200
    assert "continuing from frame 8" in err


def test_an_answer_lost_after_recording_does_not_send_the_frames_twice(tmp_path, server, run_bridge):
    server.faults = {2: "drop_after_record"}  # frames 8..11 recorded, the answer lost

    rc, summary, err, data, is_bg = _replay(tmp_path, server, run_bridge)

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    assert [first for first, _ in server.messages] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert "continuing from frame 12" in err
    assert summary["retries"] == 1


def test_several_failures_in_a_row_back_off_and_resume(tmp_path, server, run_bridge):
    server.faults = {1: "503", 2: "drop_mid_body", 3: "429", 6: "drop_after_record"}

    rc, summary, err, data, is_bg = _replay(tmp_path, server, run_bridge)

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    assert summary["retries"] == 4


def test_a_frame_gap_answer_resynchronises_to_the_servers_next_frame(tmp_path, server, run_bridge):
    server.faults = {3: ("gap", 6)}  # the server says it has only frames 0..5 when 12.. arrive

    rc, summary, err, data, is_bg = _replay(tmp_path, server, run_bridge)

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    assert [first for first, _ in server.messages] == [0, 4, 8, 12, 6, 10, 14, 18, 22, 26]
    assert summary["resyncs"] == 1 and summary["retries"] == 0
    assert "continuing from frame 6 (frame_gap" in err


def test_a_server_that_stays_down_is_given_up_after_retry_for(tmp_path, server, run_bridge):
    server.faults = dict.fromkeys(range(2, 1000), "503")

    rc, summary, err, _, _ = _replay(tmp_path, server, run_bridge, "--retry-for", "1")

    assert rc == 1
    assert "gave up after 1 s of failures: HTTP 503 busy: try later" in err
    assert summary["error"]["code"] is None and summary["frames_sent"] == 8
    assert server.session().status == "streaming" and server.session().next_frame == 8


def test_a_refused_message_ends_the_bridge_with_the_servers_message(tmp_path, server, run_bridge):
    server.faults = {1: ("refuse", 400, "bad_frame_header", "acquired_at must be non-decreasing")}

    rc, summary, err, _, _ = _replay(tmp_path, server, run_bridge)

    assert rc == 1
    assert "the server refused (400 bad_frame_header): acquired_at must be non-decreasing" in err
    assert summary["error"] == {
        "code": "bad_frame_header",
        "message": err.strip().splitlines()[-1].removeprefix("bridge: error: "),
    }
    assert server.session().next_frame == 4 and server.session().status == "streaming"
    assert not [r for r in server.requests if r[1].endswith("/end/")]


def test_a_wrong_token_is_refused_at_start(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=3)

    rc, _, err = run_bridge("replay", str(path), server.url, "--speed", "0", token="wrong")

    assert rc == 1
    assert "(401 not_authenticated): Invalid token." in err
    assert server.session().header is None


def test_an_unknown_session_is_refused(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=3)

    rc, _, err = run_bridge("replay", str(path), server.url, "--speed", "0", session="999")

    assert rc == 1
    assert "(404 not_found): No such session." in err


def test_an_end_answered_frames_missing_sends_the_missing_frames_first(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    original = server.frames

    def forget_the_last_frames_once(h, session, length, method):
        original(h, session, length, method)
        if session.next_frame == FRAMES and not getattr(server, "forgot", False):
            server.forgot = True
            for n in range(25, FRAMES):
                del session.frames[n]

    server.frames = forget_the_last_frames_once

    rc, summary, err = run_bridge("replay", str(path), server.url, "--speed", "0", "--max-message-mb", "0.025")

    assert rc == 0, err
    np.testing.assert_array_equal(server.recorded(), data)
    assert "continuing from frame 25 (frames_missing" in err
    assert server.messages[-2:] == [(25, 4), (29, 1)] and server.session().status == "ended"
