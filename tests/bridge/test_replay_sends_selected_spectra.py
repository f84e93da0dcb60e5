"""``replay --spectra`` (and ``follow --spectra``): the bridge reads the session's
frequency_selection, starts with payload "spectra" (dtype complex64, the selection in the
header) and sends each frame's rfft at those bins: every frame once, in order, the
values those of numpy's rfft of the samples, far fewer bytes than the samples; a dropped
connection, a lost answer or a frame_gap resume as for samples; a --state restart
continues with the saved selection; a session without a selection is refused before start."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.bridge.fake_server import FakeLiveServer
from tests.bridge.measurements import write_measurement

FRAMES = 30
V = 816  # the 2D fast preset: 2 channels x 816 samples, 409 rfft bins
# Every 8th bin from 3 on (1-based): 51 of the 409 bins.
SELECTION = list(range(3, V // 2 + 2, 8))
# The frames' bytes: 51 complex64 (8 bytes) per channel instead of 816 float32 (4 bytes).
FRAME_RATIO = len(SELECTION) * 8 / (V * 4)


def _expected(data: np.ndarray) -> np.ndarray:
    return np.fft.rfft(data.astype(np.float64), axis=-1)[..., np.asarray(SELECTION) - 1]


def _assert_complete(server, data, is_bg):
    session = server.session()
    assert session.status == "ended"
    recorded = server.recorded()
    assert recorded.dtype == np.dtype("<c8") and recorded.shape == (FRAMES, 1, 2, len(SELECTION))
    expected = _expected(data)
    np.testing.assert_allclose(recorded, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    assert [session.background[n] for n in range(FRAMES)] == is_bg.tolist()
    assert set(session.record_writes.values()) == {1}


def test_replay_spectra_sends_the_selected_bins_in_far_fewer_bytes(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    server.session().frequency_selection = SELECTION

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0", "--spectra")

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    header = server.session().header
    assert header["payload"] == "spectra" and header["dtype"] == "complex64"
    assert header["frequency_selection"] == SELECTION
    assert summary["payload"] == "spectra" and summary["frames_sent"] == FRAMES == len(server.session().frames)
    assert summary["frame_bytes"] == 2 * len(SELECTION) * 8 and summary["frequencies"] == len(SELECTION)
    # the same measurement as samples, to another session
    with FakeLiveServer() as samples_server:
        rc, samples, err = run_bridge("replay", path, samples_server.url, "--speed", "0")
    assert rc == 0, err
    assert samples["payload"] == "samples" and samples["frame_bytes"] == 2 * V * 4
    # frames dominate the bytes: the header and the JSON lines (acquired_at...) are the rest
    assert summary["bytes_sent"] < samples["bytes_sent"] * (FRAME_RATIO + 0.05)
    assert samples["bytes_sent"] / summary["bytes_sent"] > 5


def test_a_session_without_a_selection_is_refused_before_start(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=5)

    rc, summary, err = run_bridge("replay", path, server.url, "--speed", "0", "--spectra")

    assert rc == 1 and "has no frequency_selection (no system matrix yet)" in err
    assert server.session().header is None and not server.session().frames
    assert summary["payload"] == "spectra" and summary["frames_sent"] == 0


def test_an_unusable_selection_is_refused_before_start(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    write_measurement(path, frames=5)
    server.session().frequency_selection = [5, 3]

    rc, _, err = run_bridge("replay", path, server.url, "--speed", "0", "--spectra")

    assert rc == 1 and "the frequency selection is unusable" in err and server.session().header is None


@pytest.mark.parametrize("fault", ["drop_mid_body", "drop_after_record", ("gap", 5)])
def test_spectra_resume_without_gap_or_duplicate(tmp_path, server, run_bridge, fault):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    server.session().frequency_selection = SELECTION
    server.faults = {2: fault}
    # 4 frames per message: 4 x 816 bytes of spectra
    rc, summary, err = run_bridge(
        "replay", path, server.url, "--speed", "0", "--spectra", "--max-message-mb", str(4 * 816 / 2**20)
    )

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    assert summary["frames_sent"] == FRAMES and summary["resyncs"] == 1
    assert [m for m in server.messages if m[0] == 0] == [(0, 4)]


def test_a_restarted_spectra_bridge_continues_with_the_saved_selection(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    server.session().frequency_selection = SELECTION
    state = tmp_path / "state.json"
    server.faults = dict.fromkeys(range(2, 1000), "503")
    args = ("--speed", "0", "--spectra", "--max-message-mb", str(4 * 816 / 2**20), "--state", str(state))
    rc, summary, _ = run_bridge("replay", path, server.url, *args, "--retry-for", "0.5")
    assert rc == 1 and summary["frames_sent"] == 8
    assert json.loads(state.read_text())["header"]["frequency_selection"] == SELECTION

    server.faults = {}
    server.session().frequency_selection = None  # the saved header carries it
    rc, summary, err = run_bridge("replay", path, server.url, *args)

    assert rc == 0, err
    assert summary["resumed_from"] == 8 and summary["frames_sent"] == FRAMES
    _assert_complete(server, data, is_bg)


def test_follow_spectra_streams_a_finished_file(tmp_path, server, run_bridge):
    path = tmp_path / "scan.mdf"
    data, is_bg = write_measurement(path, frames=FRAMES)
    server.session().frequency_selection = SELECTION

    rc, summary, err = run_bridge("follow", path, server.url, "--spectra", "--idle-end", "0.2", "--poll-ms", "10")

    assert rc == 0, err
    _assert_complete(server, data, is_bg)
    assert summary["payload"] == "spectra" and summary["frames_sent"] == FRAMES


def test_the_protocol_checks_a_spectra_header_and_round_trips_spectra():
    from bridge.protocol import (
        ProtocolError,
        check_header,
        decode_frames_message,
        encode_frames_message,
        select_spectra,
    )
    from tests.bridge.test_protocol_message_format import FIELDS

    header = {
        "protocol": "mpi-live/1",
        "dtype": "complex64",
        "payload": "spectra",
        "frequency_selection": [2, 5, 817],
        "started_at": 1.7e9,
        "source": {},
        "fields": FIELDS,
    }
    check_header(header)
    for change, code in (
        ({"payload": "images"}, "unsupported_payload"),
        ({"dtype": "float32"}, "unsupported_dtype"),
        ({"frequency_selection": [5, 2]}, "bad_frequency_selection"),
        ({"frequency_selection": [1, 818]}, "frequency_out_of_range"),
    ):
        with pytest.raises(ProtocolError) as caught:
            check_header({**header, **change})
        assert caught.value.code == code
    with pytest.raises(ProtocolError) as caught:
        check_header({k: v for k, v in header.items() if k != "frequency_selection"})
    assert caught.value.code == "bad_frequency_selection"
    frames = np.random.default_rng(0).standard_normal((3, 2, 2, 1632)).astype(np.float32)
    spectra = select_spectra(frames, [2, 5, 817])
    assert spectra.dtype == np.dtype("<c8") and spectra.shape == (3, 2, 2, 3)
    np.testing.assert_allclose(spectra, np.fft.rfft(frames.astype(np.float64))[..., [1, 4, 816]], rtol=1e-6)
    body = encode_frames_message(0, spectra, [1.0, 2.0, 3.0], [False] * 3, dtype="complex64")
    decoded = decode_frames_message(body, frame_shape=(2, 2, 3), dtype="complex64")
    np.testing.assert_array_equal(decoded.frames, spectra)
    spectra[1, 0, 0, 0] = np.nan
    bad = encode_frames_message(0, spectra, [1.0, 2.0, 3.0], [False] * 3, dtype="complex64")
    with pytest.raises(ProtocolError) as caught:
        decode_frames_message(bad, frame_shape=(2, 2, 3), dtype="complex64")
    assert caught.value.code == "non_finite_samples"
