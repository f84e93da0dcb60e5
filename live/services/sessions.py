"""Live sessions: create, start (stream header), record frames, end (the recording becomes
a scan), abort. Every write here is audited in its transaction; refusals are RuleViolations.

Durability: a block of frames is appended to the recording (flushed and fsynced) before
the session row says it is recorded, and the row is committed before the bridge is
answered; a block whose row update did not commit is cut from the file by the next
append (``MDFStreamWriter.append(at=frames_recorded)``). One writer per session at a
time: the row lock, and an exclusive lock on the recording file held until the commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation
from config.reasons import require_reason
from imaging import uploads
from imaging.models import Scan, Scanner, SystemMatrix
from imaging.services.scan_uploads import assert_imaging_consent, scan_from_recording
from imaging.services.scanners import match_system_matrix, require_system_matrix_for_tracer
from live.models import LiveAlert, LiveMark, LiveSession, LiveStatus
from live.stream_header import StreamHeader, parse_stream_header, system_matrix_mismatch
from recon.recording import STORED_DTYPES, MDFStreamWriter, chain_digest, frames_sha256
from trials.models import Injection, Role, Subject
from trials.permissions import access

STREAM_ROLES = frozenset({Role.IMAGING_STAFF})
#: Frames per chained SHA-256 in the audit trail (one LIVE_FRAMES_RECORDED event each).
CHAIN_FRAMES = 256
#: Frames one block may carry.
MAX_FRAMES_PER_BLOCK = 512


class StreamPositionViolation(RuleViolation):
    """A refusal that tells the bridge where to resume: ``next_frame``."""

    def __init__(self, code: str, message: str, *, next_frame: int):
        super().__init__(code, message)
        self.next_frame = next_frame


@dataclass(frozen=True)
class RecordedBlock:
    """What one frames call recorded: the new tail of the block (``frames`` may be empty:
    a resend of frames already recorded)."""

    session: LiveSession
    first_frame: int
    frames: np.ndarray
    is_background: np.ndarray
    acquired_at: np.ndarray


def _audit(*, actor, action: AuditAction, session: LiveSession, changes: dict, reason: str = "") -> None:
    subject = session.subject
    record_event(
        actor=actor,
        action=action,
        object_type="live.livesession",
        object_id=session.pk,
        trial_id=subject.trial_id,
        site_id=subject.site_id,
        subject_id=subject.pk,
        changes=changes,
        reason=reason,
    )


def _require_streamer(actor, subject: Subject) -> None:
    access.require_role(actor, site=subject.site, roles=STREAM_ROLES, action="stream live sessions")


def _require_consent(subject: Subject, injection: Injection) -> None:
    """The imaging consent in force now, as for the scan this session will become."""
    try:
        assert_imaging_consent(subject, injection=injection, hours_after_injection=0.0)
    except RuleViolation as exc:
        raise RuleViolation("consent_not_in_force", exc.message) from None


def recording_path(session: LiveSession) -> str:
    return f"live/recordings/{session.subject_id}/live-{session.pk}.mdf"


@contextlib.contextmanager
def _recording_lock(relative: str):
    """Exclusive hold of a session's recording (blocking: blocks of one session queue).
    A lock file beside it: HDF5 takes its own lock on the recording itself."""
    if not uploads.media_path(relative).is_file():
        raise RuleViolation("recording_missing", "The session's recording is not in storage.")
    with open(uploads.media_path(f"{relative}.lock"), "ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _locked(session: LiveSession) -> LiveSession:
    return (
        # of=("self",): PostgreSQL locks no row of a nullable join (the system matrix).
        LiveSession.objects.select_for_update(of=("self",))
        .select_related("subject__site", "injection", "scanner", "system_matrix")
        .get(pk=session.pk)
    )


# --------------------------------------------------------------------------- create


def _scanner_for(subject: Subject, system_matrix: SystemMatrix | None, scanner: Scanner | None) -> Scanner:
    if system_matrix is not None:
        if system_matrix.scanner.site_id != subject.site_id:
            raise RuleViolation(
                "system_matrix_not_found",
                f"System matrix #{system_matrix.pk} is not a calibration of site {subject.site.code}.",
                field="system_matrix",
            )
        if not system_matrix.active:
            raise RuleViolation(
                "system_matrix_retired", f"System matrix {system_matrix.describe()} is retired.", field="system_matrix"
            )
        if scanner is not None and scanner.pk != system_matrix.scanner_id:
            raise RuleViolation(
                "scanner_mismatch",
                f"System matrix #{system_matrix.pk} was measured on scanner #{system_matrix.scanner_id}, "
                f"not #{scanner.pk}.",
                field="scanner",
            )
        return system_matrix.scanner
    if scanner is not None:
        if scanner.site_id != subject.site_id:
            raise RuleViolation(
                "scanner_not_found",
                f"Scanner #{scanner.pk} is not a scanner of site {subject.site.code}.",
                field="scanner",
            )
        return scanner
    scanners = list(Scanner.objects.filter(site_id=subject.site_id)[:2])
    if len(scanners) != 1:
        raise RuleViolation(
            "scanner_required",
            f"Site {subject.site.code} has {'no scanner' if not scanners else 'several scanners'}: "
            "name the scanner (or the system matrix).",
            field="scanner",
        )
    return scanners[0]


def session_create(
    *, actor, injection: Injection, system_matrix: SystemMatrix | None = None, scanner: Scanner | None = None
) -> LiveSession:
    """Open a live session for ``injection`` (imaging staff of its site; the subject not
    withdrawn; imaging consent in force). The scanner: the system matrix's, else the one
    given, else the site's only scanner."""
    subject = injection.subject
    _require_streamer(actor, subject)
    if subject.status == Subject.Status.WITHDRAWN:
        raise RuleViolation(
            "subject_withdrawn", f"Subject {subject.code} has withdrawn from the trial: no new scans.", field="subject"
        )
    _require_consent(subject, injection)
    scanner = _scanner_for(subject, system_matrix, scanner)
    if system_matrix is None:
        require_system_matrix_for_tracer(scanner, injection)
    with transaction.atomic():
        session = LiveSession(
            injection=injection,
            subject=subject,
            scanner=scanner,
            system_matrix=system_matrix,
            created_by=actor,
        )
        session.full_clean()
        session.save()
        _audit(
            actor=actor,
            action=AuditAction.LIVE_SESSION_CREATED,
            session=session,
            changes={
                "status": [None, LiveStatus.OPEN],
                "injection": [None, injection.pk],
                "scanner": [None, scanner.pk],
                "system_matrix": [None, system_matrix.pk if system_matrix else None],
            },
        )
    return session


# --------------------------------------------------------------------------- start


def _raise_mismatch(*, actor, session: LiveSession, system_matrix: SystemMatrix, message: str) -> None:
    """Record the technical alert (committed: it outlives the refusal), then refuse."""
    with transaction.atomic():
        open_alert = LiveAlert.objects.filter(
            session=session, kind=LiveAlert.Kind.SYSTEM_MATRIX_MISMATCH, acknowledged_at__isnull=True
        ).first()
        if open_alert is None:
            alert = LiveAlert(session=session, kind=LiveAlert.Kind.SYSTEM_MATRIX_MISMATCH, message=message[:4000])
            alert.full_clean(validate_constraints=False)
            alert.save()
            _audit(
                actor=actor,
                action=AuditAction.LIVE_ALERT_RAISED,
                session=session,
                changes={
                    "alert": [None, alert.pk],
                    "kind": [None, alert.kind],
                    "system_matrix": [None, system_matrix.pk],
                },
                reason=message[:4000],
            )
    raise RuleViolation("system_matrix_mismatch", message)


def session_start(*, actor, session: LiveSession, header) -> LiveSession:
    """Accept the stream header: validate it, match or check the system matrix, create
    the recording; the session streams. The identical header again: nothing changes."""
    _require_streamer(actor, session.subject)
    if session.status == LiveStatus.STREAMING:
        # Idempotent only for the header already accepted (compared as stored).
        if isinstance(header, dict) and session.header == parse_stream_header(header).as_json():
            return session
        raise RuleViolation(
            "stream_header_changed", "The session already streams with another header: open a new session."
        )
    if session.status != LiveStatus.OPEN:
        raise RuleViolation("session_not_open", f"Live session #{session.pk} is {session.status}.")
    parsed: StreamHeader = parse_stream_header(header)
    _require_consent(session.subject, session.injection)
    system_matrix = session.system_matrix
    if system_matrix is None:
        system_matrix = match_system_matrix(session.scanner, session.injection, parsed.acquisition())
    elif not system_matrix.active:
        raise RuleViolation(
            "system_matrix_retired",
            f"System matrix {system_matrix.describe()} was retired after the session was opened: open a new session.",
        )
    mismatch = system_matrix_mismatch(parsed, system_matrix)
    if mismatch:
        _raise_mismatch(actor=actor, session=session, system_matrix=system_matrix, message=mismatch)
    relative = recording_path(session)
    target = uploads.media_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A start that failed after creating the file left it empty: the session was never streaming.
    uploads.remove(relative)
    MDFStreamWriter(target, parsed.fields, parsed.frame_shape, parsed.dtype, parsed.frequency_selection).close()
    try:
        with transaction.atomic():
            locked = _locked(session)
            if locked.status != LiveStatus.OPEN:
                raise RuleViolation("session_not_open", f"Live session #{session.pk} is {locked.status}.")
            locked.status = LiveStatus.STREAMING
            locked.header = parsed.as_json()
            locked.frame_shape = list(parsed.frame_shape)
            locked.dtype = parsed.dtype
            locked.frame_duration_s = parsed.frame_duration_s
            locked.system_matrix = system_matrix
            locked.recording = relative
            locked.started_at = timezone.now()
            locked.full_clean()
            locked.save()
            _audit(
                actor=actor,
                action=AuditAction.LIVE_SESSION_STARTED,
                session=locked,
                changes={
                    "status": [LiveStatus.OPEN, LiveStatus.STREAMING],
                    "system_matrix": [None, system_matrix.pk],
                    "frame_shape": [None, list(parsed.frame_shape)],
                    "dtype": [None, parsed.dtype],
                    "source": [None, parsed.source],
                },
            )
    except BaseException:
        uploads.remove(relative)
        raise
    return locked


# --------------------------------------------------------------------------- frames


def assert_streaming(*, actor, session: LiveSession) -> None:
    """Refuse before a frames body is read: only the site's imaging staff, only while streaming."""
    _require_streamer(actor, session.subject)
    if session.status != LiveStatus.STREAMING:
        raise RuleViolation(
            "session_not_streaming",
            f"Live session #{session.pk} is {session.status}"
            + (": send the stream header first (start)." if session.status == LiveStatus.OPEN else "."),
        )


def _check_block(session: LiveSession, first_frame, frames, acquired_at, is_background) -> tuple:
    if isinstance(first_frame, bool) or not isinstance(first_frame, int) or first_frame < 0:
        raise RuleViolation("bad_frame_header", "first_frame must be a frame index (an integer >= 0).")
    arr = np.asarray(frames)
    count = arr.shape[0] if arr.ndim else 0
    if count > MAX_FRAMES_PER_BLOCK:
        raise RuleViolation("too_many_frames", f"A block carries at most {MAX_FRAMES_PER_BLOCK} frames, got {count}.")
    if count < 1:
        raise RuleViolation("bad_frame_header", "A block carries at least one frame.")
    shape = tuple(session.frame_shape or ())
    if arr.shape[1:] != shape or arr.dtype != np.dtype(STORED_DTYPES[session.dtype]):
        raise RuleViolation(
            "bad_frame_length",
            f"Frames must be {count} x {' x '.join(map(str, shape))} samples of {session.dtype}.",
        )
    times = np.asarray(acquired_at, dtype=np.float64).reshape(-1)
    background = np.asarray(is_background).reshape(-1)
    if times.size != count or background.size != count or background.dtype != np.bool_:
        raise RuleViolation("bad_frame_header", f"acquired_at and background must have {count} entries each.")
    if not np.isfinite(times).all() or (np.diff(times) < 0).any():
        raise RuleViolation("bad_frame_header", "acquired_at must be finite and non-decreasing Unix seconds.")
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(count, -1)).all(axis=1))[0])
        raise RuleViolation(
            "non_finite_samples", f"Frame {first_frame + bad} has NaN or infinite samples: nothing of the block kept."
        )
    return arr, times, background


def _chain(*, actor, session: LiveSession, writer: MDFStreamWriter, upto: int, final: bool) -> None:
    """Chain the SHA-256 of each completed chunk of CHAIN_FRAMES frames (and, ``final``,
    of the rest) into the audit trail, one LIVE_FRAMES_RECORDED event per chunk."""
    while session.chained_frames < upto and (final or session.chained_frames + CHAIN_FRAMES <= upto):
        first = session.chained_frames
        last = min(first + CHAIN_FRAMES, upto)
        digest = frames_sha256(writer.read_frames(first, last))
        session.recording_chain = chain_digest(session.recording_chain, digest)
        session.chained_frames = last
        _audit(
            actor=actor,
            action=AuditAction.LIVE_FRAMES_RECORDED,
            session=session,
            changes={
                "first_frame": [None, first],
                "last_frame": [None, last - 1],
                "sha256": [None, digest],
                "chain": [None, session.recording_chain],
            },
        )


def _write_marks(session: LiveSession, writer: MDFStreamWriter) -> None:
    """The session's injection marks into the recording (``live.services.marks``), in the
    order entered; nothing when none was entered. Under the session's row lock, so a mark
    entered meanwhile waits and is then refused (the session is no longer live)."""
    marks = list(LiveMark.objects.filter(session=session).order_by("at", "id").values_list("kind", "frame", "at"))
    if marks:
        writer.write_marks(
            [kind for kind, _, _ in marks], [frame for _, frame, _ in marks], [at.timestamp() for _, _, at in marks]
        )


def _abort(*, actor, session: LiveSession, reason: str) -> LiveSession:
    with transaction.atomic():
        locked = _locked(session)
        if locked.is_final:
            return locked
        before = locked.status
        if locked.recording and (
            locked.frames_recorded > locked.chained_frames or LiveMark.objects.filter(session=locked).exists()
        ):
            with MDFStreamWriter.reopen(uploads.media_path(locked.recording)) as writer:
                _chain(actor=actor, session=locked, writer=writer, upto=locked.frames_recorded, final=True)
                _write_marks(locked, writer)  # the kept recording says what the clinicians marked
        locked.status = LiveStatus.ABORTED
        locked.status_reason = reason[:4000]
        locked.ended_at = timezone.now()
        locked.save()
        _audit(
            actor=actor,
            action=AuditAction.LIVE_SESSION_ABORTED,
            session=locked,
            changes={"status": [before, LiveStatus.ABORTED], "frames_recorded": [None, locked.frames_recorded]},
            reason=reason[:4000],
        )
    return locked


def _abort_held(*, actor, session: LiveSession, reason: str) -> LiveSession:
    """``_abort`` while holding the recording (no block is being appended meanwhile)."""
    if not session.recording:
        return _abort(actor=actor, session=session, reason=reason)
    with _recording_lock(session.recording):
        return _abort(actor=actor, session=session, reason=reason)


def _stop_without_consent(*, actor, session: LiveSession) -> None:
    """A withdrawn consent stops the session (aborted, with the reason), then refuses."""
    try:
        _require_consent(session.subject, session.injection)
    except RuleViolation as exc:
        _abort_held(actor=actor, session=session, reason=f"Consent not in force: {exc.message}")
        raise


def session_record_frames(
    *, actor, session: LiveSession, first_frame: int, frames, acquired_at, is_background
) -> RecordedBlock:
    """Record a block of frames starting at stream index ``first_frame``. Frames already
    recorded are skipped (an idempotent resend); a block that starts after the next frame
    expected is refused (``frame_gap``, with ``next_frame``). The new frames are in the
    recording, flushed to disk, when this returns."""
    assert_streaming(actor=actor, session=session)
    arr, times, background = _check_block(session, first_frame, frames, acquired_at, is_background)
    _stop_without_consent(actor=actor, session=session)
    count = arr.shape[0]
    with _recording_lock(session.recording), transaction.atomic():
        locked = _locked(session)
        if locked.status != LiveStatus.STREAMING:
            raise RuleViolation("session_not_streaming", f"Live session #{session.pk} is {locked.status}.")
        expected = int(locked.frames_recorded)
        if first_frame > expected:
            raise StreamPositionViolation(
                "frame_gap",
                f"The block starts at frame {first_frame} but frame {expected} is the next expected: "
                f"resend from frame {expected} (next_frame).",
                next_frame=expected,
            )
        skip = expected - first_frame
        new = arr[skip:]
        if new.shape[0]:
            with MDFStreamWriter.reopen(uploads.media_path(locked.recording)) as writer:
                if expected > 0:
                    last_time = float(writer.h5["/measurement/_frameAcquiredAt"][expected - 1])
                    if times[skip] < last_time:
                        raise RuleViolation(
                            "bad_frame_header",
                            f"acquired_at of frame {expected} ({times[skip]}) is before that of frame "
                            f"{expected - 1} ({last_time}).",
                        )
                recorded = writer.append(new, times[skip:], background[skip:], at=expected)
                _chain(actor=actor, session=locked, writer=writer, upto=recorded, final=False)
            locked.frames_recorded = recorded
        locked.frames_received += count
        locked.save(update_fields=["frames_received", "frames_recorded", "recording_chain", "chained_frames"])
    return RecordedBlock(
        session=locked,
        first_frame=expected,
        frames=new,
        is_background=background[skip:],
        acquired_at=times[skip:],
    )


# --------------------------------------------------------------------------- end / abort


def hours_after_injection(injection: Injection, acquired_at: float) -> float:
    """The scan's time point: the first frame's acquisition vs the injection (0 when the
    stream began before the injection was given: the injection is being monitored)."""
    hours = (acquired_at - injection.administered_at.timestamp()) / 3600.0
    return max(hours, 0.0) if math.isfinite(hours) else 0.0


def session_end(*, actor, session: LiveSession, frames_sent: int) -> LiveSession:
    """Close the recording and register it as a scan of the injection (the interface
    queues the scan). ``frames_sent`` must equal the frames recorded (``frames_missing``
    with next_frame otherwise). Once ended, ending again changes nothing."""
    _require_streamer(actor, session.subject)
    if session.status == LiveStatus.ENDED:
        return session
    assert_streaming(actor=actor, session=session)
    if isinstance(frames_sent, bool) or not isinstance(frames_sent, int) or frames_sent < 0:
        raise RuleViolation("invalid", "frames_sent must be the number of frames sent.", field="frames_sent")
    _stop_without_consent(actor=actor, session=session)
    with _recording_lock(session.recording), transaction.atomic():
        locked = _locked(session)
        if locked.status == LiveStatus.ENDED:
            return locked
        if locked.status != LiveStatus.STREAMING:
            raise RuleViolation("session_not_streaming", f"Live session #{session.pk} is {locked.status}.")
        if frames_sent != locked.frames_recorded:
            raise StreamPositionViolation(
                "frames_missing",
                f"{frames_sent} frames were sent but {locked.frames_recorded} are recorded: "
                f"send from frame {locked.frames_recorded} (next_frame), then end.",
                next_frame=int(locked.frames_recorded),
            )
        if locked.frames_recorded == 0:
            raise RuleViolation("no_frames_recorded", "No frame was recorded: abort the session instead.")
        with MDFStreamWriter.reopen(uploads.media_path(locked.recording)) as writer:
            # Frames past the acknowledged count (a block whose commit failed) are cut.
            writer.truncate(locked.frames_recorded)
            _chain(actor=actor, session=locked, writer=writer, upto=locked.frames_recorded, final=True)
            # Before the file is hashed into the scan (scan_from_recording): the marks are in the record.
            _write_marks(locked, writer)
            first_acquired_at = float(writer.h5["/measurement/_frameAcquiredAt"][0])
        scan: Scan = scan_from_recording(
            actor=actor,
            injection=locked.injection,
            scanner=locked.scanner,
            path=locked.recording,
            filename=f"live-{locked.pk}.mdf",
            hours_after_injection=hours_after_injection(locked.injection, first_acquired_at),
        )
        locked.status = LiveStatus.ENDED
        locked.scan = scan
        locked.ended_at = timezone.now()
        locked.full_clean()
        locked.save()
        _audit(
            actor=actor,
            action=AuditAction.LIVE_SESSION_ENDED,
            session=locked,
            changes={
                "status": [LiveStatus.STREAMING, LiveStatus.ENDED],
                "scan": [None, scan.pk],
                "frames_recorded": [None, locked.frames_recorded],
                "sha256": [None, scan.sha256],
                "chain": [None, locked.recording_chain],
            },
        )
    return locked


def session_abort(*, actor, session: LiveSession, reason: str) -> LiveSession:
    """Stop the session with a reason; the recording is kept, no scan is made. Aborting
    an aborted session changes nothing; an ended one cannot be aborted."""
    _require_streamer(actor, session.subject)
    reason = require_reason(reason)
    if session.status == LiveStatus.ENDED:
        raise RuleViolation("session_ended", f"Live session #{session.pk} has ended: its scan is #{session.scan_id}.")
    if session.status == LiveStatus.ABORTED:
        return session
    return _abort_held(actor=actor, session=session, reason=reason)
