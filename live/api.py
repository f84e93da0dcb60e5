"""REST endpoints of live sessions (protocol ``mpi-live/1``, docs/live-protocol.md).

    POST /live-sessions/                 open a session for an injection (imaging staff)
    GET  /live-sessions/, /{id}/         site members and monitors; sponsors nothing
    POST /live-sessions/{id}/start/      the stream header (JSON)
    POST /live-sessions/{id}/frames/     one block of frames (application/vnd.mpi-live.frames)
    POST /live-sessions/{id}/end/        {"frames_sent"}: the recording becomes a scan (queued)
    POST /live-sessions/{id}/abort/      {"reason"}
    GET  /live-sessions/{id}/marks/      the injection marks (who may watch the session)
    POST /live-sessions/{id}/marks/      {"kind", "note"?}: a clinician marks the injection (audited)

The scanner bridge's token (scope ``scanner``) reaches these and nothing else of the API;
a read-only token reads. Each method: scope through the selector (another site's session
is a 404 before its body is read), call one service, answer the session. After a block
is recorded, ``live.feed`` hands it to the live worker. Marks are a person's: a full
token or the browser session enters them, a read-only token lists them, the scanner's
token reaches neither.
"""

from __future__ import annotations

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.response import Response

from config.errors import RuleViolation
from config.request_body import RequestBody
from config.token_scopes import TokenScope
from config.viewsets import ScopedViewSet
from imaging import tasks as imaging_tasks
from imaging.selectors import scanners_visible_to, system_matrices_visible_to
from live import feed, selectors, wire
from live import serializers as s
from live.models import LiveSession
from live.services.marks import mark_enter
from live.services.sessions import (
    StreamPositionViolation,
    assert_streaming,
    session_abort,
    session_create,
    session_end,
    session_record_frames,
    session_start,
)
from trials.filters import IdFilterSet
from trials.selectors import injections_visible_to
from trials.serializers import ReasonInput


class FramesParser(BaseParser):
    """Accepts the frames media type; the view reads the body itself (``live.wire``)."""

    media_type = wire.FRAMES_CONTENT_TYPE

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never called
        raise RuntimeError("a frames body is read by the view, never parsed")


class LiveSessionFilter(IdFilterSet):
    status = django_filters.ChoiceFilter(choices=LiveSession.Status.choices)

    class Meta(IdFilterSet.Meta):
        model = LiveSession
        fields = ["injection", "subject", "status"]


@extend_schema(tags=["live"])
class LiveSessionViewSet(ScopedViewSet):
    selector = selectors.live_sessions_visible_to
    serializer_class = s.LiveSessionOutput
    filterset_class = LiveSessionFilter
    ordering_fields = ["created_at", "status"]
    parser_classes = [JSONParser, FramesParser]
    # The bridge streams with a scanner token; a read-only token lists and reads.
    token_scopes = frozenset({TokenScope.READ, TokenScope.SCANNER})

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        if isinstance(exc, StreamPositionViolation) and isinstance(response.data, dict):
            response.data["next_frame"] = exc.next_frame
        return response

    def _answer(self, session: LiveSession, http_status=status.HTTP_200_OK) -> Response:
        return self.output(self.refetched(session), http_status=http_status)

    @extend_schema(
        request=s.LiveSessionCreateInput,
        responses={201: s.LiveSessionOutput},
        summary="Open a live session for an injection (imaging staff of its site; imaging consent in force)",
    )
    def create(self, request):
        data = self.validated(s.LiveSessionCreateInput)
        user = request.user
        injection = get_object_or_404(injections_visible_to(user), pk=data["injection"])
        system_matrix = scanner = None
        if data.get("system_matrix"):
            system_matrix = get_object_or_404(system_matrices_visible_to(user), pk=data["system_matrix"])
        if data.get("scanner"):
            scanner = get_object_or_404(scanners_visible_to(user), pk=data["scanner"])
        session = session_create(actor=user, injection=injection, system_matrix=system_matrix, scanner=scanner)
        feed.session_created(session.pk)
        return self._answer(session, status.HTTP_201_CREATED)

    @extend_schema(
        request=s.StreamHeaderInput,
        responses=s.LiveSessionOutput,
        summary="Send the stream header: the session streams (the same header again: 200, nothing changes)",
    )
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        session = self.get_object()
        session = session_start(actor=request.user, session=session, header=request.data)
        feed.session_started(session.pk)
        return self._answer(session)

    @extend_schema(
        request={wire.FRAMES_CONTENT_TYPE: bytes},
        responses=s.FramesAnswer,
        summary="Record a block of frames: one JSON line, a newline, then the samples (recorded before the answer)",
        description=wire.__doc__,
    )
    @action(detail=True, methods=["post"])
    def frames(self, request, pk=None):
        session = self.get_object()  # another site's session: 404 before the body is read
        assert_streaming(actor=request.user, session=session)
        if request.content_type.split(";")[0].strip() != wire.FRAMES_CONTENT_TYPE:
            raise RuleViolation(
                "unsupported_media_type", f"A frames block needs Content-Type {wire.FRAMES_CONTENT_TYPE}."
            )
        message = wire.read_frames_message(
            RequestBody(request._request), frame_shape=session.frame_shape, dtype=session.dtype
        )
        try:
            block = session_record_frames(
                actor=request.user,
                session=session,
                first_frame=message.first_frame,
                frames=message.frames,
                acquired_at=message.acquired_at,
                is_background=message.background,
            )
        except RuleViolation as exc:
            if exc.code == "consent_not_in_force":  # the service aborted the session
                feed.session_closed(session.pk, "abort", {"reason": exc.message})
            raise
        feed.frames_recorded(block)
        recorded = int(block.session.frames_recorded)
        return Response({"next_frame": recorded, "frames_recorded": recorded})

    @extend_schema(
        request=s.EndInput,
        responses=s.LiveSessionOutput,
        summary="End the stream: the recording becomes a scan of the injection, queued for the offline pipeline",
    )
    @action(detail=True, methods=["post"])
    def end(self, request, pk=None):
        session = self.get_object()
        frames_sent = self.validated(s.EndInput)["frames_sent"]
        was_ended = session.status == LiveSession.Status.ENDED
        try:
            session = session_end(actor=request.user, session=session, frames_sent=frames_sent)
        except RuleViolation as exc:
            if exc.code == "consent_not_in_force":
                feed.session_closed(session.pk, "abort", {"reason": exc.message})
            raise
        if not was_ended and session.scan is not None:
            imaging_tasks.queue_next_step(session.scan)
            feed.session_closed(session.pk, "end", {"scan": session.scan_id})
        return self._answer(session)

    @extend_schema(
        request=ReasonInput,
        responses=s.LiveSessionOutput,
        summary="Abort the session with a reason (the recording is kept; no scan is made)",
    )
    @action(detail=True, methods=["post"])
    def abort(self, request, pk=None):
        session = self.get_object()
        reason = self.validated(ReasonInput)["reason"]
        was_aborted = session.status == LiveSession.Status.ABORTED
        session = session_abort(actor=request.user, session=session, reason=reason)
        if not was_aborted:
            feed.session_closed(session.pk, "abort", {"reason": session.status_reason})
        return self._answer(session)

    @extend_schema(
        methods=["GET"],
        request=None,
        responses=s.LiveMarkOutput(many=True),
        summary="The session's injection marks, in the order entered",
    )
    @extend_schema(
        methods=["POST"],
        request=s.LiveMarkInput,
        responses={201: s.LiveMarkOutput},
        summary="Mark the injection's start, pause, resume or stop (investigator, coordinator or imaging staff "
        "of the site, while the session is open or streaming; audited, written into the recording at the end)",
    )
    # A person's marks: a full token or the browser session; a read-only token lists; the scanner's token neither.
    @action(detail=True, methods=["get", "post"], token_scopes=frozenset({TokenScope.READ}), pagination_class=None)
    def marks(self, request, pk=None):
        session = self.get_object()  # another site's session (and any, for a sponsor): 404
        if request.method == "GET":
            return Response(s.LiveMarkOutput(selectors.session_marks(session), many=True).data)
        data = self.validated(s.LiveMarkInput)
        mark = mark_enter(actor=request.user, session=session, kind=data["kind"], note=data["note"])
        feed.mark_entered(mark)
        return self.output(mark, status.HTTP_201_CREATED, serializer_class=s.LiveMarkOutput)
