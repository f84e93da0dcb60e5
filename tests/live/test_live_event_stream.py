"""GET /api/v1/live-sessions/{id}/events/: Server-Sent Events with resume, closed after
`ended`; the session's access rules (another site and sponsors: 404)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from compliance.tokens import token_issue
from config.token_scopes import TokenScope
from live import events as live_events
from live.models import LiveSession
from live.worker import LiveWorker
from tests.live.conftest import publish


def url(session) -> str:
    return f"/api/v1/live-sessions/{session.pk}/events/"


def parse(body: bytes) -> list[tuple[str | None, dict | None, str]]:
    """(id, data, raw) of each SSE message of a body."""
    out = []
    for message in body.decode().split("\n\n"):
        if not message:
            continue
        event_id = data = None
        for line in message.split("\n"):
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        out.append((event_id, data, message))
    return out


@pytest.fixture
def streamed(live, transport, engines):
    """A session whose 40 frames (4 blocks) were processed and whose stream ended."""
    t0 = time.time()
    for k in range(4):
        publish(transport, live.session, k * 10, np.tile([90_000.0, 0.0, 0.0], (10, 1)), t0=t0)
    LiveSession.objects.filter(pk=live.session.pk).update(status="ended")
    transport.publish_control(live.session.pk, "end", {"scan": None})
    LiveWorker(live.session.pk, transport, engine_factory=engines.factory).run()
    return live.session


def get(user, session, **headers):
    client = Client()
    client.force_login(user)
    if headers.pop("REQUEST_METHOD", "GET") == "HEAD":
        return client.head(url(session), **headers)
    return client.get(url(session), **headers)


def test_the_stream_sends_every_event_then_closes_after_ended(imaging_a, streamed, transport):
    response = get(imaging_a, streamed)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"].startswith("no-cache")
    messages = parse(b"".join(response.streaming_content))
    assert messages[0][2] == "retry: 1000"
    sent = [(i, d) for i, d, _ in messages[1:]]
    assert sent == transport.read_events(streamed.pk, None, block_ms=0)
    assert sent[-1][1]["type"] == "ended"
    assert [d["frame"] for _, d in sent if d["type"] == "metrics"] == list(range(40))


@pytest.mark.parametrize("how", ["header", "query"])
def test_last_event_id_resumes_without_duplicate_or_gap(imaging_a, streamed, transport, how):
    everything = transport.read_events(streamed.pk, None, block_ms=0)
    cut = everything[len(everything) // 2][0]
    if how == "header":
        response = get(imaging_a, streamed, HTTP_LAST_EVENT_ID=cut)
    else:
        client = Client()
        client.force_login(imaging_a)
        response = client.get(url(streamed), {"last_event_id": cut})
    rest = [(i, d) for i, d, _ in parse(b"".join(response.streaming_content))[1:]]
    assert everything[: len(everything) // 2 + 1] + rest == everything


def test_a_viewer_that_reconnects_mid_stream_misses_nothing(live, transport, engines):
    t0 = time.time()
    worker = LiveWorker(live.session.pk, transport, engine_factory=engines.factory)
    publish(transport, live.session, 0, np.tile([90_000.0, 0.0, 0.0], (10, 1)), t0=t0)
    worker.run(max_blocks=1)
    first = live_events.sync_stream(live.session.pk, None)
    assert next(first).startswith("retry:")
    seen = []
    for _ in range(len(transport.read_events(live.session.pk, None, block_ms=0))):
        seen.append(next(first))
    first.close()  # the viewer's connection drops
    publish(transport, live.session, 10, np.tile([90_000.0, 0.0, 0.0], (10, 1)), t0=t0)
    transport.publish_control(live.session.pk, "end", {"scan": None})
    worker.run()
    last_id = seen[-1].split("\n")[0][4:]
    seen += list(live_events.sync_stream(live.session.pk, last_id))[1:]
    frames = [json.loads(m.split("\n")[1][6:]) for m in seen]
    assert [e["frame"] for e in frames if e["type"] == "metrics"] == list(range(20))
    ids = [int(m.split("\n")[0][4:]) for m in seen]
    assert ids == list(range(1, len(ids) + 1))


def test_a_token_of_the_site_reads_the_stream(imaging_a, streamed):
    key = token_issue(user=imaging_a, name="viewer").key
    response = Client().get(url(streamed), HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
    assert parse(b"".join(response.streaming_content))[-1][1]["type"] == "ended"


def test_a_scanner_token_does_not_watch(imaging_a, streamed):
    key = token_issue(user=imaging_a, name="bridge", scope=TokenScope.SCANNER).key
    response = Client().get(url(streamed), HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_no_credentials_or_a_bad_token_is_401(streamed):
    response = Client().get(url(streamed))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"
    bad = Client().get(url(streamed), HTTP_AUTHORIZATION="Token nonsense")
    assert bad.status_code == 401


@pytest.mark.parametrize("user", ["coordinator_b", "sponsor"])
def test_it_validates_ownership(request, streamed, user):
    response = get(request.getfixturevalue(user), streamed)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_monitor_watches(monitor, streamed):
    assert get(monitor, streamed).status_code == 200


def test_an_unknown_session_is_404(imaging_a, streamed):
    response = Client()
    response.force_login(imaging_a)
    assert response.get(f"/api/v1/live-sessions/{streamed.pk + 99}/events/").status_code == 404


def test_the_asgi_path_streams_the_same_events(imaging_a, streamed, transport):
    async def read():
        client = AsyncClient()
        await client.aforce_login(imaging_a)
        response = await client.get(url(streamed), headers={"Last-Event-ID": "3"})
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/event-stream")
        return b"".join([chunk async for chunk in response.streaming_content])

    messages = parse(async_to_sync(read)())
    assert messages[0][2] == "retry: 1000"
    assert [(i, d) for i, d, _ in messages[1:]] == transport.read_events(streamed.pk, "3", block_ms=0)


def test_pings_keep_an_idle_stream_open(live, transport, monkeypatch):
    monkeypatch.setattr(live_events, "PING_INTERVAL_S", 0.0)
    monkeypatch.setattr(live_events, "SYNC_BLOCK_MS", 10)
    stream = live_events.sync_stream(live.session.pk, None)
    assert next(stream).startswith("retry:")
    assert next(stream) == ": ping\n\n"
    transport.publish_event(live.session.pk, {"type": "ended", "scan": None, "status": "aborted"})
    assert next(stream).startswith("id: 1\ndata: ")
    with pytest.raises(StopIteration):
        next(stream)


def test_a_finished_session_whose_events_are_gone_still_ends_the_stream(imaging_a, streamed, monkeypatch):
    """An embedded server restarted after the worker finished: the transport has no event
    left; the `ended` event comes from the session's row (without an id)."""
    from live.transport import reset_memory_transport

    reset_memory_transport()
    monkeypatch.setattr(live_events, "FINISHED_CHECK_S", 0.0)
    monkeypatch.setattr(live_events, "SYNC_BLOCK_MS", 10)
    messages = parse(b"".join(get(imaging_a, streamed).streaming_content))
    assert messages[-1][:2] == (None, {"type": "ended", "scan": None, "status": "ended"})


def test_a_viewer_of_a_session_over_but_not_finished_starts_the_embedded_worker(imaging_a, live, monkeypatch):
    started = []
    monkeypatch.setattr(live_events, "ensure_worker", started.append)
    LiveSession.objects.filter(pk=live.session.pk).update(status="aborted", status_reason="consent withdrawn")
    response = get(imaging_a, live.session, REQUEST_METHOD="HEAD")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    assert started == [live.session.pk]
