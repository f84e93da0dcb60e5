"""Injection marks (issue #16): a clinician of the site marks the injection's start, pause,
resume and stop while the session is open or streaming; each mark is audited, published
to the session's viewers, listed, and written into the recording at the end, which the
offline pipeline still validates and reconstructs."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from audit.actions import AuditAction
from audit.models import AuditEvent
from config.errors import RuleViolation
from imaging.models import Scan
from live.models import LiveMark, LiveSession
from live.services.marks import allowed_kinds, injection_state, mark_enter
from recon.validate import validate
from tests.imaging.helpers import process
from tests.live.conftest import record
from tests.live.stream import URL, send, started, token_client

START, PAUSE, RESUME, STOP = "injection_start", "injection_pause", "injection_resume", "injection_stop"


def _marks_url(session) -> str:
    return f"{URL}{session.pk}/marks/"


def _entered() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=AuditAction.LIVE_MARK_ENTERED).order_by("sequence"))


# --------------------------------------------------------------------------- the service


def test_a_whole_injection_with_a_pause_is_marked_in_order(live, investigator_a):
    session = live.session
    record(session, 40)
    kinds = [START, PAUSE, RESUME, PAUSE, RESUME, STOP]
    for i, kind in enumerate(kinds):
        record(session, 40 + 10 * i)
        mark = mark_enter(actor=investigator_a, session=session, kind=kind, note="" if i else "pump at 1 ml/min")
        assert mark.frame == 40 + 10 * i  # the next frame index when it was entered
        assert mark.created_by == investigator_a and mark.at <= timezone.now()
    rows = list(LiveMark.objects.filter(session=session).order_by("at", "id"))
    assert [m.kind for m in rows] == kinds and rows[0].note == "pump at 1 ml/min"
    events = _entered()
    assert [e.changes["kind"][1] for e in events] == kinds
    assert events[0].object_type == "live.livemark" and events[0].object_id == str(rows[0].pk)
    assert events[0].actor_id == investigator_a.pk and events[0].subject_id == live.subject.pk
    assert events[0].changes["frame"] == [None, 40] and events[0].changes["session"] == [None, session.pk]
    assert injection_state(kinds) == "stopped" and allowed_kinds("stopped") == []


def test_a_mark_before_the_stream_has_no_frame(live, coordinator_a):
    LiveSession.objects.filter(pk=live.session.pk).update(status="open")
    live.session.refresh_from_db()
    mark = mark_enter(actor=coordinator_a, session=live.session, kind=START)
    assert mark.frame is None


@pytest.mark.parametrize(
    "before, kind, code",
    [
        ([], PAUSE, "injection_not_started"),
        ([], RESUME, "injection_not_started"),
        ([], STOP, "injection_not_started"),
        ([START], START, "injection_already_started"),
        ([START], RESUME, "injection_not_paused"),
        ([START, PAUSE], PAUSE, "injection_not_running"),
        ([START, PAUSE, RESUME], RESUME, "injection_not_paused"),
        ([START, STOP], STOP, "injection_stopped"),
        ([START, STOP], START, "injection_stopped"),
        ([START, PAUSE, STOP], RESUME, "injection_stopped"),
    ],
)
def test_marks_out_of_order_are_refused_and_nothing_is_written(live, imaging_a, before, kind, code):
    for k in before:
        mark_enter(actor=imaging_a, session=live.session, kind=k)
    with pytest.raises(RuleViolation) as refused:
        mark_enter(actor=imaging_a, session=live.session, kind=kind)
    assert refused.value.code == code
    assert LiveMark.objects.count() == len(before) and len(_entered()) == len(before)


@pytest.mark.parametrize("status", ["ended", "aborted"])
def test_no_mark_once_the_session_is_over(live, investigator_a, status):
    LiveSession.objects.filter(pk=live.session.pk).update(status=status)
    with pytest.raises(RuleViolation) as refused:
        mark_enter(actor=investigator_a, session=live.session, kind=START)
    assert refused.value.code == "session_not_live"
    assert not LiveMark.objects.exists() and not _entered()


def test_an_unknown_kind_is_refused(live, investigator_a):
    with pytest.raises(RuleViolation) as refused:
        mark_enter(actor=investigator_a, session=live.session, kind="injection_faster")
    assert refused.value.code == "invalid_kind" and refused.value.field == "kind"
    assert not LiveMark.objects.exists()


# --------------------------------------------------------------------------- the API


@pytest.mark.parametrize("who", ["investigator_a", "coordinator_a", "imaging_a"])
def test_clinicians_of_the_site_enter_a_mark(api, live, memory_feed, who, request):
    user = request.getfixturevalue(who)
    record(live.session, 75)
    response = api(user).post(_marks_url(live.session), {"kind": START, "note": "bolus"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    mark = LiveMark.objects.get()
    assert body["id"] == mark.pk and body["kind"] == START and body["frame"] == 75
    assert body["created_by"] == user.username and body["note"] == "bolus" and body["session"] == live.session.pk
    assert len(_entered()) == 1
    # Published to the session's viewers at once.
    [event] = [e for _, e in memory_feed.get().read_events(live.session.pk, None, block_ms=0) if e["type"] == "mark"]
    assert event["kind"] == START and event["frame"] == 75 and event["id"] == mark.pk
    assert event["at"] == pytest.approx(mark.at.timestamp()) and event["by"] == user.username
    # Listed, and in the session's detail.
    listed = api(user).get(_marks_url(live.session))
    assert listed.status_code == 200 and [m["id"] for m in listed.json()] == [mark.pk]
    detail = api(user).get(f"{URL}{live.session.pk}/").json()
    assert [m["kind"] for m in detail["marks"]] == [START]


def test_an_order_conflict_is_a_409_with_its_code(api, live, memory_feed, investigator_a):
    client = api(investigator_a)
    response = client.post(_marks_url(live.session), {"kind": PAUSE}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "injection_not_started"
    assert client.post(_marks_url(live.session), {"kind": START}, format="json").status_code == 201
    again = client.post(_marks_url(live.session), {"kind": START}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "injection_already_started"
    assert LiveMark.objects.count() == 1 and len(_entered()) == 1


@pytest.mark.parametrize("body", [{}, {"kind": "injection_faster"}, {"kind": START, "note": "x" * 501}])
def test_a_bad_body_is_a_400(api, live, memory_feed, investigator_a, body):
    response = api(investigator_a).post(_marks_url(live.session), body, format="json")
    assert response.status_code == 400
    assert not LiveMark.objects.exists() and not _entered()


def test_a_monitor_reads_the_marks_but_does_not_enter_them(api, live, memory_feed, monitor, investigator_a):
    mark_enter(actor=investigator_a, session=live.session, kind=START)
    assert [m["kind"] for m in api(monitor).get(_marks_url(live.session)).json()] == [START]
    response = api(monitor).post(_marks_url(live.session), {"kind": STOP}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert LiveMark.objects.count() == 1


@pytest.mark.parametrize("who", ["coordinator_b", "sponsor"])
def test_it_validates_ownership(api, live, memory_feed, investigator_a, who, request):
    mark_enter(actor=investigator_a, session=live.session, kind=START)
    client = api(request.getfixturevalue(who))
    assert client.get(_marks_url(live.session)).status_code == 404
    assert client.post(_marks_url(live.session), {"kind": STOP}, format="json").status_code == 404
    assert LiveMark.objects.count() == 1


def test_the_scanner_token_enters_no_mark_and_a_read_token_only_lists(api, live, memory_feed, imaging_a):
    scanner = token_client(api, imaging_a, "scanner")
    assert scanner.post(_marks_url(live.session), {"kind": START}, format="json").status_code == 403
    assert scanner.get(_marks_url(live.session)).status_code == 403
    reader = token_client(api, imaging_a, "read")
    assert reader.post(_marks_url(live.session), {"kind": START}, format="json").status_code == 403
    assert reader.get(_marks_url(live.session)).status_code == 200
    assert not LiveMark.objects.exists() and not _entered()
    full = token_client(api, imaging_a, "full")
    assert full.post(_marks_url(live.session), {"kind": START}, format="json").status_code == 201


# --------------------------------------------------------------------------- into the recording


def test_the_marks_are_in_the_recorded_scan_which_the_pipeline_still_takes(
    api, pipeline, stream, memory_feed, investigator_a
):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    clinician = api(investigator_a)
    assert clinician.post(f"{URL}{sid}/marks/", {"kind": START}, format="json").status_code == 201
    assert send(client, sid, stream, 0, 6).status_code == 200
    assert clinician.post(f"{URL}{sid}/marks/", {"kind": PAUSE}, format="json").status_code == 201
    assert send(client, sid, stream, 6, stream.count).status_code == 200
    assert clinician.post(f"{URL}{sid}/marks/", {"kind": RESUME}, format="json").status_code == 201
    assert clinician.post(f"{URL}{sid}/marks/", {"kind": STOP}, format="json").status_code == 201
    response = client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    assert response.status_code == 200, response.content
    marks = list(LiveMark.objects.filter(session_id=sid).order_by("at", "id"))
    scan = Scan.objects.get()
    path = settings.MEDIA_ROOT / scan.file
    with h5py.File(path, "r") as h5:
        kinds = [k.decode() for k in h5["/measurement/_marks"][()]]
        frames = h5["/measurement/_markFrames"][()]
        times = h5["/measurement/_markTimes"][()]
        assert h5["/measurement/_markFrames"].dtype == np.dtype("<i8")
        assert h5["/measurement/_markTimes"].dtype == np.dtype("<f8")
    assert kinds == [START, PAUSE, RESUME, STOP]
    assert frames.tolist() == [0, 6, stream.count, stream.count]
    np.testing.assert_allclose(times, [m.at.timestamp() for m in marks], rtol=0, atol=1e-6)
    # The scan's SHA-256 is of the file with its marks (they were written before it was hashed).
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert validate(str(path)).valid
    # No mark after the end.
    late = clinician.post(f"{URL}{sid}/marks/", {"kind": STOP}, format="json")
    assert late.status_code == 409 and late.json()["error"]["code"] == "session_not_live"
    scan = process(scan)
    assert scan.status == "quantified", scan.status_reason


def test_an_aborted_session_keeps_its_marks_in_the_recording(api, pipeline, stream, memory_feed, investigator_a):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    assert send(client, sid, stream, 0, 4).status_code == 200
    assert api(investigator_a).post(f"{URL}{sid}/marks/", {"kind": START}, format="json").status_code == 201
    response = client.post(f"{URL}{sid}/abort/", {"reason": "catheter displaced, injection abandoned"}, format="json")
    assert response.status_code == 200, response.content
    row = LiveSession.objects.get(pk=sid)
    with h5py.File(settings.MEDIA_ROOT / row.recording, "r") as h5:
        assert [k.decode() for k in h5["/measurement/_marks"][()]] == [START]
        assert h5["/measurement/_markFrames"][()].tolist() == [4]
        assert h5["/measurement/data"].shape[0] == 4


def test_a_recording_without_marks_has_no_mark_datasets(api, pipeline, stream, memory_feed):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    assert send(client, sid, stream, 0, stream.count).status_code == 200
    assert client.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json").status_code == 200
    with h5py.File(settings.MEDIA_ROOT / Scan.objects.get().file, "r") as h5:
        assert "_marks" not in h5["/measurement"] and "_markFrames" not in h5["/measurement"]
