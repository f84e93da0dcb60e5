"""POST /live-sessions/{id}/frames/: a block is in the recording (bytes exact, flushed)
before the answer; a resend records nothing twice; a gap is refused with next_frame;
each malformed message has its code and records nothing; a withdrawn consent stops the
session mid-stream. Recorded frames are handed to the transport, in order."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from django.conf import settings

from audit.actions import AuditAction
from audit.models import AuditEvent
from live.models import LiveSession
from tests.live.stream import FRAMES_TYPE, URL, create, frames_body, post_frames, send, started
from trials.services.consent import consent_withdraw

pytestmark = pytest.mark.usefixtures("memory_feed")


def recorded(session_id: int):
    row = LiveSession.objects.get(pk=session_id)
    with h5py.File(settings.MEDIA_ROOT / row.recording, "r") as h5:
        return (
            row,
            np.asarray(h5["/measurement/data"]),
            np.asarray(h5["/measurement/isBackgroundFrame"]).astype(bool),
            np.asarray(h5["/measurement/_frameAcquiredAt"]),
            int(h5["/acquisition/numFrames"][()]),
        )


def published(memory_feed, session_id: int):
    return memory_feed.get().read_frames(session_id, block_ms=0)


def test_blocks_are_recorded_exactly_and_handed_on(api, pipeline, stream, memory_feed):
    client = api(pipeline.user)
    session = started(client, pipeline, stream)
    sid, n = session["id"], stream.count
    times = [1.7e9 + 0.5 * i for i in range(n)]
    for first, stop in ((0, 7), (7, 8), (8, n)):
        response = send(client, sid, stream, first, stop, times[first:stop])
        assert response.status_code == 200, response.content
        assert response.json() == {"next_frame": stop, "frames_recorded": stop}
    row, data, background, when, num_frames = recorded(sid)
    assert data.tobytes() == stream.frames.astype("<f4").tobytes()  # byte for byte
    np.testing.assert_array_equal(background, stream.background)
    np.testing.assert_array_equal(when, times)
    assert num_frames == n and row.frames_recorded == row.frames_received == n
    blocks = published(memory_feed, sid)
    assert [(b.first_frame, b.count) for b in blocks] == [(0, 7), (7, 1), (8, n - 8)]
    np.testing.assert_array_equal(np.concatenate([b.frames for b in blocks]), stream.frames)
    np.testing.assert_array_equal(np.concatenate([b.is_background for b in blocks]), stream.background)
    assert memory_feed.workers == [sid] * 4  # at start (the engine is prepared), then per block
    detail = client.get(f"{URL}{sid}/").json()
    assert (detail["frames_received"], detail["frames_recorded"], detail["next_frame"]) == (n, n, n)


def test_a_resend_records_only_the_new_tail(api, pipeline, stream, memory_feed):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    assert send(client, sid, stream, 0, 7).json()["next_frame"] == 7
    # The answer to that block was lost: the bridge resends from 0, with 3 more frames.
    assert send(client, sid, stream, 0, 10).json() == {"next_frame": 10, "frames_recorded": 10}
    assert send(client, sid, stream, 2, 5).json()["next_frame"] == 10  # all of it known already
    row, data, _, _, num_frames = recorded(sid)
    np.testing.assert_array_equal(data, stream.frames[:10])
    assert num_frames == 10 and row.frames_recorded == 10 and row.frames_received == 7 + 10 + 3
    assert [(b.first_frame, b.count) for b in published(memory_feed, sid)] == [(0, 7), (7, 3)]


def test_a_gap_is_refused_with_the_next_frame(api, pipeline, stream, memory_feed):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    send(client, sid, stream, 0, 5)
    response = send(client, sid, stream, 8, 10)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "frame_gap" and response.json()["next_frame"] == 5
    row, data, *_ = recorded(sid)
    assert row.frames_recorded == 5 and data.shape[0] == 5
    assert len(published(memory_feed, sid)) == 1


def _message(stream, **overrides):
    return frames_body(0, stream.frames[:3], stream.background[:3], **overrides)


def _nan_frames(stream):
    frames = stream.frames[:3].copy()
    frames[1, 0, 0, 5] = np.nan
    return frames_body(0, frames, stream.background[:3])


BAD_MESSAGES = {
    "no JSON line": ("bad_frame_header", lambda s: s.frames[:3].tobytes()),
    "invalid JSON": ("bad_frame_header", lambda s: b"{first_frame: 0}\n" + s.frames[:3].tobytes()),
    "NaN time": ("bad_frame_header", lambda s: _message(s).replace(b"1700000000.0,", b"NaN,", 1)),
    "count as text": ("bad_frame_header", lambda s: _message(s, count="3")),
    "negative first frame": ("bad_frame_header", lambda s: _message(s, first_frame=-1)),
    "extra key": ("bad_frame_header", lambda s: _message(s, sequence=1)),
    "times too few": ("bad_frame_header", lambda s: _message(s, acquired_at=[1.7e9, 1.7e9])),
    "times decreasing": ("bad_frame_header", lambda s: _message(s, acquired_at=[3.0, 2.0, 1.0])),
    "background not bool": ("bad_frame_header", lambda s: _message(s, background=[0, 1, 0])),
    "zero frames": (
        "bad_frame_header",
        lambda s: json.dumps({"first_frame": 0, "count": 0, "acquired_at": [], "background": []}).encode() + b"\n",
    ),
    "count too large": ("too_many_frames", lambda s: _message(s, count=513)),
    "bytes short": ("bad_frame_length", lambda s: _message(s)[:-4]),
    "bytes long": ("bad_frame_length", lambda s: _message(s) + b"\0\0\0\0"),
    "count says 2": (
        "bad_frame_length",
        lambda s: _message(s, count=2, acquired_at=[1.0, 2.0], background=[True, True]),
    ),
    "NaN sample": ("non_finite_samples", _nan_frames),
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_each_bad_message_has_its_code_and_records_nothing(api, pipeline, stream, memory_feed, kind):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    code, build = BAD_MESSAGES[kind]
    response = post_frames(client, sid, build(stream))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    row, data, *_ = recorded(sid)
    assert row.frames_recorded == row.frames_received == 0 and data.shape[0] == 0
    assert published(memory_feed, sid) == [] and memory_feed.workers == [sid]  # from start only


def test_a_body_too_large_is_refused_from_its_content_length_unread(api, pipeline, stream):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    # The test client's payload holds 1 byte: reading more than that would fail the request.
    response = post_frames(client, sid, b"x", CONTENT_LENGTH=str(64 * 2**20 + 1))
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_frames"
    assert recorded(sid)[0].frames_received == 0


def test_frames_need_a_started_stream_and_their_media_type(api, pipeline, stream):
    client = api(pipeline.user)
    session = create(client, pipeline.injection.pk)
    response = post_frames(client, session["id"], _message(stream))
    assert response.status_code == 409 and response.json()["error"]["code"] == "session_not_streaming"
    client.post(f"{URL}{session['id']}/start/", stream.header, format="json")
    wrong = client.generic("POST", f"{URL}{session['id']}/frames/", _message(stream), content_type="text/plain")
    assert wrong.status_code == 415 and wrong.json()["error"]["code"] == "unsupported_media_type"
    assert FRAMES_TYPE in wrong.json()["error"]["message"]


def test_a_withdrawn_consent_stops_the_stream(api, pipeline, stream, memory_feed, coordinator_a):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    assert send(client, sid, stream, 0, 5).status_code == 200
    consent_withdraw(actor=coordinator_a, consent=pipeline.consent, scopes=["imaging"], reason="subject asked to stop")
    response = send(client, sid, stream, 5, 10)
    assert response.status_code == 409 and response.json()["error"]["code"] == "consent_not_in_force"
    row, data, *_ = recorded(sid)
    assert row.status == "aborted" and "onsent" in row.status_reason and row.ended_at is not None
    assert row.frames_recorded == 5 and data.shape[0] == 5
    assert row.scan is None
    aborted = AuditEvent.objects.filter(action=AuditAction.LIVE_SESSION_ABORTED, object_id=str(sid)).get()
    assert "onsent" in aborted.reason
    # The frames recorded before the withdrawal are chained into the trail at the stop.
    assert AuditEvent.objects.filter(action=AuditAction.LIVE_FRAMES_RECORDED, object_id=str(sid)).count() == 1
    # Nothing more is taken.
    again = send(client, sid, stream, 5, 10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "session_not_streaming"
    assert recorded(sid)[1].shape[0] == 5
    blocks = published(memory_feed, sid)
    assert [(b.kind, b.first_frame) for b in blocks] == [("frames", 0), ("abort", -1)]


def test_acquisition_times_may_not_go_back_across_blocks(api, pipeline, stream, memory_feed):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    assert send(client, sid, stream, 0, 5, [1.7e9 + i for i in range(5)]).status_code == 200
    response = send(client, sid, stream, 5, 7, [1.7e9 + 3.5, 1.7e9 + 6])
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_frame_header"
    row, data, *_ = recorded(sid)
    assert row.frames_recorded == 5 and data.shape[0] == 5 and len(published(memory_feed, sid)) == 1
