"""What the ingest path hands on once a block is recorded: the frames to the transport
(``live.transport``), and the session's live worker started if this process runs it
(``live.runner.ensure_worker``: a worker thread in the embedded setup, nothing when
separate ``live_worker`` processes do the work). Called by the interface (``live.api``)
after the service returned, so only recorded frames are ever published."""

from __future__ import annotations

from live.models import LiveMark
from live.runner import ensure_prepared, ensure_worker
from live.services.sessions import RecordedBlock
from live.transport import get_transport


def session_created(session_id: int) -> None:
    """A session was opened: prepare its engine now (calibration rows, operator, region
    functionals into the live cache), while the scanner is still being set up."""
    ensure_prepared(session_id)


def session_started(session_id: int) -> None:
    """The stream header was accepted: start the session's worker now, so that it reads the
    calibration and builds (or loads) the operator before the first frame arrives."""
    ensure_worker(session_id)


def frames_recorded(block: RecordedBlock) -> None:
    """Publish the newly recorded frames of ``block`` (a resend of recorded frames publishes nothing)."""
    if block.frames.shape[0]:
        get_transport().publish_frames(
            block.session.pk, block.first_frame, block.frames, block.is_background, block.acquired_at
        )
    ensure_worker(block.session.pk)


def session_closed(session_id: int, kind: str, info: dict) -> None:
    """After end (``info``: {"scan": id}) or abort (``info``: {"reason"}): the control block
    after the last frames, so the worker finishes the session."""
    get_transport().publish_control(session_id, kind, info)
    ensure_worker(session_id)


def mark_event(mark: LiveMark) -> dict:
    """The ``mark`` event of the session's event stream (docs/live-protocol.md)."""
    return {
        "type": "mark",
        "id": mark.pk,
        "kind": mark.kind,
        "frame": mark.frame,
        "at": mark.at.timestamp(),
        "by": mark.created_by.get_username(),
        "note": mark.note,
    }


def mark_entered(mark: LiveMark) -> None:
    """After a mark was entered (committed): viewers of the session see it at once."""
    get_transport().publish_event(mark.session_id, mark_event(mark))
