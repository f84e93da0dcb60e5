"""Who reaches a live session: the site's imaging staff stream; site members and monitors
read; a sponsor sees nothing (404, empty list); another site's user gets 404 on the
session and on every streaming action, before a body is read. The bridge's scanner
token streams; a read-only token reads and cannot stream."""

from __future__ import annotations

import pytest

from live.models import LiveSession
from tests.conftest import _member
from tests.live.stream import URL, create, frames_body, post_frames, send, started, token_client
from trials.models import Role

pytestmark = pytest.mark.usefixtures("memory_feed")


@pytest.fixture
def imaging_b(site_b):
    return _member("imaging_b", Role.IMAGING_STAFF, site=site_b)


def test_site_members_and_monitors_read_a_sponsor_sees_nothing(api, pipeline, stream, investigator_a, monitor, sponsor):
    sid = started(api(pipeline.user), pipeline, stream)["id"]
    for reader in (investigator_a, monitor):
        assert api(reader).get(f"{URL}{sid}/").json()["status"] == "streaming"
        assert [s["id"] for s in api(reader).get(URL).json()["results"]] == [sid]
    assert api(sponsor).get(f"{URL}{sid}/").status_code == 404
    assert api(sponsor).get(URL).json()["results"] == []


def test_the_list_filters_by_injection_subject_and_status(api, pipeline, stream):
    client = api(pipeline.user)
    sid = started(client, pipeline, stream)["id"]
    other = create(client, pipeline.injection.pk)["id"]
    assert {s["id"] for s in client.get(URL, {"injection": pipeline.injection.pk}).json()["results"]} == {sid, other}
    assert [s["id"] for s in client.get(URL, {"status": "streaming"}).json()["results"]] == [sid]
    assert [s["id"] for s in client.get(URL, {"status": "open", "subject": pipeline.subject.pk}).json()["results"]] == [
        other
    ]
    assert client.get(URL, {"subject": pipeline.subject.pk + 1000}).json()["results"] == []


def test_it_validates_ownership(api, pipeline, stream, imaging_b):
    """Another site's imaging staff: 404 on the session and every action; nothing changes."""
    sid = started(api(pipeline.user), pipeline, stream)["id"]
    send(api(pipeline.user), sid, stream, 0, 3)
    other = api(imaging_b)
    assert other.get(f"{URL}{sid}/").status_code == 404
    assert other.get(URL).json()["results"] == []
    assert other.post(f"{URL}{sid}/start/", stream.header, format="json").status_code == 404
    body = frames_body(3, stream.frames[3:5], stream.background[3:5])
    assert post_frames(other, sid, body).status_code == 404
    # Before the body is read: a Content-Length far beyond the payload does not matter.
    assert post_frames(other, sid, b"x", CONTENT_LENGTH=str(10**9)).status_code == 404
    assert other.post(f"{URL}{sid}/end/", {"frames_sent": 3}, format="json").status_code == 404
    assert other.post(f"{URL}{sid}/abort/", {"reason": "not my session at all"}, format="json").status_code == 404
    row = LiveSession.objects.get()
    assert row.status == "streaming" and row.frames_recorded == row.frames_received == 3


def test_a_site_member_who_is_not_imaging_staff_may_not_stream(api, pipeline, stream, coordinator_a):
    sid = started(api(pipeline.user), pipeline, stream)["id"]
    response = send(api(coordinator_a), sid, stream, 0, 3)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert LiveSession.objects.get().frames_received == 0


def test_the_scanner_token_streams_and_a_read_token_only_reads(api, pipeline, stream):
    bridge = token_client(api, pipeline.user, "scanner")
    session = started(bridge, pipeline, stream)
    sid = session["id"]
    assert send(bridge, sid, stream, 0, stream.count).json()["next_frame"] == stream.count
    reader = token_client(api, pipeline.user, "read")
    assert reader.get(f"{URL}{sid}/").json()["frames_recorded"] == stream.count
    refused = post_frames(reader, sid, frames_body(0, stream.frames[:1], stream.background[:1]))
    assert refused.status_code == 403
    assert reader.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json").status_code == 403
    ended = bridge.post(f"{URL}{sid}/end/", {"frames_sent": stream.count}, format="json")
    assert ended.status_code == 200 and ended.json()["scan"]
    # The scanner token reaches nothing else of the API.
    assert bridge.get("/api/v1/subjects/").status_code == 403
