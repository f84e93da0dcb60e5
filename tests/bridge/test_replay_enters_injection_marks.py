"""replay --mark KIND@FRAME: the injection marks of a replayed injection (the demo, training)
entered through the platform's marks endpoint when the stream reaches their frame, with a
person's token (the scanner's may not mark); a refused mark is reported, the stream goes on."""

from __future__ import annotations

import pytest

from bridge.cli import main
from tests.bridge.fake_server import PERSON_TOKEN, TOKEN
from tests.bridge.measurements import write_measurement


def test_marks_land_on_their_frames_with_a_persons_token(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=40, background=(4, 5))

    rc, summary, err = run_bridge(
        "replay",
        path,
        server.url,
        "--speed",
        "0",
        "--mark",
        "injection_start@9",
        "--mark",
        "injection_stop@31",
        "--marks-token",
        PERSON_TOKEN,
    )

    assert rc == 0, err
    session = server.session()
    assert session.status == "ended" and session.next_frame == 40
    # Entered when frames 0..8 (and 0..30) were recorded: the mark's frame is exactly its own.
    assert [(m["kind"], m["frame"]) for m in session.marks] == [("injection_start", 9), ("injection_stop", 31)]
    assert summary["marks"] == [{"kind": "injection_start", "frame": 9}, {"kind": "injection_stop", "frame": 31}]
    # The frames still went in order, each once.
    assert all(count == 1 for count in session.record_writes.values())


def test_the_marks_token_may_come_from_the_environment(tmp_path, server, run_bridge, monkeypatch):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=12)
    monkeypatch.setenv("MPI_BRIDGE_MARKS_TOKEN", PERSON_TOKEN)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0", "--mark", "injection_start@0")

    assert rc == 0, err
    assert [(m["kind"], m["frame"]) for m in server.session().marks] == [("injection_start", 0)]


def test_marks_without_a_persons_token_are_refused_before_streaming(tmp_path, server, run_bridge, monkeypatch):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=12)
    monkeypatch.delenv("MPI_BRIDGE_MARKS_TOKEN", raising=False)

    rc, summary, err = run_bridge("replay", path, server.url, "--mark", "injection_start@3")

    assert rc == 2 and "--marks-token" in err
    assert server.session().status == "open" and server.session().next_frame == 0  # nothing sent


def test_a_malformed_mark_is_a_usage_error(tmp_path, server, capsys):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=12)
    for bad in ("injection_start", "start@3", "injection_stop@-1", "injection_stop@x"):
        argv = ["replay", str(path), "--url", server.url, "--token", TOKEN, "--session", "41", "--mark", bad]
        with pytest.raises(SystemExit) as stopped:
            main([*argv, "--marks-token", PERSON_TOKEN])
        assert stopped.value.code == 2 and "KIND@FRAME" in capsys.readouterr().err, bad
    assert server.session().next_frame == 0


def test_a_refused_mark_is_reported_and_the_stream_goes_on(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=20)
    server.session().marks.append({"kind": "injection_start", "frame": 0, "note": ""})  # marked on the page already

    rc, summary, err = run_bridge(
        "replay", path, server.url, "--speed", "0", "--mark", "injection_start@5", "--marks-token", PERSON_TOKEN
    )

    assert rc == 0, err
    assert "injection_already_started" in err
    assert server.session().status == "ended" and server.session().next_frame == 20
    assert summary["marks"] == [] and len(server.session().marks) == 1
