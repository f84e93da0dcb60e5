"""GET /api/v1/live-sessions/{id}/events/: a session's live events as Server-Sent Events.

A plain Django view (an event stream is no DRF content negotiation), authenticated as
the API is: ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]`` (an ``Authorization:
Token`` key or the session cookie) and its default permission classes (a scoped token
reaches this view only with the ``read`` scope, as any list or detail). The session is
read through ``live.selectors.live_sessions_visible_to``: another site's user, and any
sponsor, get 404 as for the session itself.

The stream: ``retry: 1000``, then each event as ``id: <transport id>`` and ``data:
<JSON>``; ``Last-Event-ID`` (the header a browser's EventSource resends) or
``?last_event_id=`` resumes after that id, with no event twice and none missed (as long
as the transport keeps it: ``live.transport.EVENTS_KEPT``). ``: ping`` every
``PING_INTERVAL_S`` seconds keeps proxies from closing an idle connection. The stream
closes after the ``ended`` event; when the transport no longer has it (an embedded server
restarted) it is sent from the session's row, without an id, once the worker has finished
the session. A viewer of a session that is over but not yet finished by a worker starts
this process's embedded worker for it (``live.runner.ensure_worker``).

Served two ways by the same view:
- WSGI (runserver, gunicorn): a generator that waits on the transport
  (``read_events`` blocking up to a second). Each open stream holds a server thread.
- ASGI (``config.asgi``, uvicorn: the ``events`` service of docker-compose.yml): an
  async iterator fed by the session's one reader in this process (``live.fanout``: one
  thread per watched session waits on the transport and encodes each event once), woken
  when events arrive and writing each batch at once, so an open stream holds no thread
  and costs neither a transport read nor an encoding per event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings

from config.api_errors import error_body
from config.token_scopes import TokenScope
from live import fanout
from live.models import FINAL_STATUSES, LiveSession
from live.runner import ensure_worker
from live.selectors import live_sessions_visible_to
from live.transport import get_transport
from live.worker import FINISHED

PING_INTERVAL_S = 15.0
SYNC_BLOCK_MS = 1000
RETRY_MS = 1000
# While no event comes, whether the worker has finished the session is read from its row this often.
FINISHED_CHECK_S = 5.0


class _EventsEndpoint:
    """What the API's permission classes read off a view."""

    token_scopes = frozenset({TokenScope.READ})


def _error(code: str, message: str, status: int, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(error_body(code, message), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _authenticated(request: HttpRequest) -> tuple[object | None, JsonResponse | None]:
    authentication_classes: Any = api_settings.DEFAULT_AUTHENTICATION_CLASSES
    permission_classes: Any = api_settings.DEFAULT_PERMISSION_CLASSES
    authenticators = [cls() for cls in authentication_classes]
    drf = Request(request, authenticators=authenticators)
    challenge = {}
    if authenticators:
        header = authenticators[0].authenticate_header(drf)
        if header:
            challenge = {"WWW-Authenticate": header}
    try:
        user = drf.user
    except exceptions.AuthenticationFailed as exc:
        return None, _error("authentication_failed", str(exc.detail), 401, challenge)
    except UnicodeError:  # an Authorization header that is not latin-1: no credential at all
        return None, _error("authentication_failed", "The Authorization header is malformed.", 401, challenge)
    if user is None or not user.is_authenticated:
        return None, _error("not_authenticated", "Authentication credentials were not provided.", 401, challenge)
    view = _EventsEndpoint()
    for permission_class in permission_classes:
        permission = permission_class()
        if not permission.has_permission(drf, view):
            message = getattr(permission, "message", None) or "You do not have permission to perform this action."
            return None, _error("permission_denied", str(message), 403)
    return user, None


def sse(event_id: str, event: dict) -> str:
    return f"id: {event_id}\ndata: {json.dumps(event, separators=(',', ':'), allow_nan=False)}\n\n"


def finished_event(session_id: int) -> dict | None:
    """The ``ended`` event of a session whose stream the live worker finished, from its row:
    for a viewer whose transport no longer holds the event (an embedded server restarted)."""
    row = LiveSession.objects.filter(pk=session_id, worker_id=FINISHED).values("status", "scan_id").first()
    return None if row is None else {"type": "ended", "scan": row["scan_id"], "status": row["status"]}


def _ended(event: dict) -> str:
    # No id: the transport never numbered it, and a resume after it has nothing to miss.
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


def sync_stream(session_id: int, after: str | None, *, transport=None) -> Iterator[str]:
    transport = transport if transport is not None else get_transport()
    yield f"retry: {RETRY_MS}\n\n"
    pinged = checked = time.monotonic()
    while True:
        events = transport.read_events(session_id, after, block_ms=SYNC_BLOCK_MS)
        for event_id, event in events:
            after = event_id
            yield sse(event_id, event)
            if event.get("type") == "ended":
                return
        now = time.monotonic()
        if not events and now - checked >= FINISHED_CHECK_S:
            checked = now
            ended = finished_event(session_id)
            if ended is not None:
                yield _ended(ended)
                return
        if now - pinged >= PING_INTERVAL_S:
            pinged = now
            yield ": ping\n\n"


async def async_stream(session_id: int, after: str | None, *, transport=None) -> AsyncIterator[str]:
    transport = transport if transport is not None else get_transport()
    yield f"retry: {RETRY_MS}\n\n"
    feed = fanout.join(session_id, transport, sse)
    try:
        key = transport.event_key(after)
        pinged = checked = time.monotonic()
        while True:
            kept = feed.since(key)
            if kept is None:
                # Older than what the feed keeps (a late resume): the transport itself, up to it.
                events = await asyncio.to_thread(transport.read_events, session_id, after, block_ms=0)
                for event_id, event in events:
                    after, key = event_id, transport.event_key(event_id)
                    yield sse(event_id, event)
                    if event.get("type") == "ended":
                        return
                if events:
                    continue
                kept = []  # nothing newer in the transport either: wait for the feed
            if kept:
                after, key = kept[-1][1], kept[-1][0]
                yield "".join(text for _, _, text, _ in kept)  # one write for the batch
                if kept[-1][3] or any(ended for *_, ended in kept):
                    return
            now = time.monotonic()
            if not kept and now - checked >= FINISHED_CHECK_S:
                checked = now
                ended = await sync_to_async(finished_event)(session_id)
                if ended is not None:
                    yield _ended(ended)
                    return
            if now - pinged >= PING_INTERVAL_S:
                pinged = now
                yield ": ping\n\n"
            if not kept:
                await feed.wait(min(PING_INTERVAL_S - (now - pinged), FINISHED_CHECK_S - (now - checked)))
    finally:
        fanout.leave(feed)


def session_events(request: HttpRequest, pk: int) -> HttpResponseBase:
    if request.method not in ("GET", "HEAD"):
        return _error("method_not_allowed", f'Method "{request.method}" not allowed.', 405, {"Allow": "GET, HEAD"})
    user, refused = _authenticated(request)
    if refused is not None:
        return refused
    session = live_sessions_visible_to(user).filter(pk=pk).values("status", "worker_id").first()
    if session is None:
        return _error("not_found", "Not found.", 404)
    if session["status"] in FINAL_STATUSES and session["worker_id"] != FINISHED:
        # Over, but its stream not finished: this process's worker (embedded) takes it up.
        ensure_worker(pk)
    if request.method == "HEAD":
        return HttpResponse(content_type="text/event-stream; charset=utf-8")
    after = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or None
    stream = async_stream(pk, after) if isinstance(request, ASGIRequest) else sync_stream(pk, after)
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, no-store"
    response["X-Accel-Buffering"] = "no"  # nginx and alike: pass each event on at once
    return response


# The route belongs to the live-session resource: the attribute a router's views carry,
# read by whoever walks the API's routes (the cross-site and sponsor checks of the tests).
session_events.initkwargs = {"basename": "live-session"}  # type: ignore[attr-defined]  # a function attribute
