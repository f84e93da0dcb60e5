"""Resumable uploads (tus): create, append, complete, terminate; refusals audited.

A scan upload completes into a Scan; a calibration upload completes into a file that waits
for ``imaging.services.scanners.system_matrix_register_from_upload``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation
from imaging import uploads
from imaging.models import (
    Scan,
    Scanner,
    ScanStatus,
    SystemMatrix,
    Upload,
)
from imaging.services._common import _audit_scan
from imaging.services.scanners import REGISTER_ROLES, require_system_matrix_for_tracer
from trials.models import Injection, Role, Subject
from trials.permissions import access
from trials.schedule import consent_scopes_for_scan
from trials.services.consent import assert_scope_active

UPLOAD_ROLES = frozenset({Role.IMAGING_STAFF, Role.COORDINATOR})


@dataclass(frozen=True)
class UploadRequest:
    subject: Subject
    injection_id: int
    scanner_id: int
    hours_after_injection: float
    sha256: str
    filename: str
    length: int


@dataclass(frozen=True)
class CalibrationUploadRequest:
    """A calibration MDF for ``scanner``'s library: no subject, no injection."""

    scanner: Scanner
    sha256: str
    filename: str
    length: int


def _refuse_upload(*, actor, subject: Subject, code: str, message: str, upload=None):
    # A refusal is itself part of the record: only its audit event is written.
    with transaction.atomic():
        record_event(
            actor=actor,
            action=AuditAction.UPLOAD_REFUSED,
            object_type="imaging.upload",
            object_id=upload.pk if upload is not None else "",
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes={"code": [None, code]},
            reason=message,
        )
    raise RuleViolation(code, message)


def _duplicate_scan(subject: Subject, sha256: str) -> Scan | None:
    return Scan.objects.filter(subject=subject, sha256=sha256).exclude(status=ScanStatus.REJECTED).first()


def imaging_scopes(*, injection, hours_after_injection: float, scan: Scan | None = None) -> tuple[str, ...]:
    """The consent scopes a scan needs: ``trials.schedule.consent_scopes_for_scan``, asked
    with the scans of ``injection`` on file (rejected files and ``scan`` itself left out)."""
    on_file = Scan.objects.filter(injection=injection, hours_after_injection__lt=hours_after_injection).exclude(
        status=ScanStatus.REJECTED
    )
    if scan is not None:
        on_file = on_file.exclude(pk=scan.pk)
    hours = on_file.values_list("hours_after_injection", flat=True)[:1]
    return consent_scopes_for_scan(hours_after_injection, hours_on_file=hours)


def assert_imaging_consent(
    subject: Subject, *, injection, hours_after_injection: float, scan: Scan | None = None
) -> None:
    """Raise RuleViolation unless every scope this scan needs is in force now."""
    for scope in imaging_scopes(injection=injection, hours_after_injection=hours_after_injection, scan=scan):
        assert_scope_active(subject, scope)


def _checked_size_and_sha256(length: int, sha256: str, what: str) -> str:
    """The declared digest, normalised; refuses a length out of bounds or a malformed digest."""
    if length > settings.IMAGING_UPLOAD_MAX_BYTES:
        raise RuleViolation(
            "upload_too_large",
            f"Upload-Length {length} bytes exceeds the maximum {what} size of {settings.IMAGING_UPLOAD_MAX_BYTES} bytes.",
        )
    if length <= 0:
        raise RuleViolation("empty_upload", "Upload-Length must be at least 1 byte.")
    sha = sha256.strip().lower()
    if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise RuleViolation(
            "invalid_sha256",
            "Upload-Metadata sha256 must be the 64-digit hex SHA-256 of the file.",
            field="sha256",
        )
    return sha


def upload_create(*, actor, request: UploadRequest) -> Upload:
    subject = request.subject
    access.require_role(actor, site=subject.site, roles=UPLOAD_ROLES, action="upload scans")
    sha = _checked_size_and_sha256(request.length, request.sha256, "scan")
    if subject.status == Subject.Status.WITHDRAWN:
        raise RuleViolation(
            "subject_withdrawn", f"Subject {subject.code} has withdrawn from the trial: no new scans.", field="subject"
        )
    if request.hours_after_injection < 0:
        raise RuleViolation("invalid_time_point", "The time point cannot be before the injection.", field="hours")
    injection = (
        Injection.objects.select_related("batch__nanoparticle_lot")
        .filter(pk=request.injection_id, subject=subject)
        .first()
    )
    if injection is None:
        raise RuleViolation(
            "injection_not_found",
            f"Injection #{request.injection_id} is not an injection of subject {subject.code}.",
            field="injection",
        )
    scanner = Scanner.objects.filter(pk=request.scanner_id, site_id=subject.site_id).first()
    if scanner is None:
        raise RuleViolation(
            "scanner_not_found",
            f"Scanner #{request.scanner_id} is not a scanner of site {subject.site.code}.",
            field="scanner",
        )
    duplicate = _duplicate_scan(subject, sha)
    if duplicate is not None:
        raise RuleViolation(
            "duplicate_scan",
            f"This file (sha256 {sha[:12]}…) was already uploaded for subject "
            f"{subject.code} as scan #{duplicate.pk} ({duplicate.status}).",
        )
    try:
        assert_imaging_consent(subject, injection=injection, hours_after_injection=request.hours_after_injection)
    except RuleViolation as exc:
        _refuse_upload(actor=actor, subject=subject, code=exc.code, message=exc.message)
    require_system_matrix_for_tracer(scanner, injection)

    upload_id = uuid.uuid4()
    relative = f"imaging/uploads/{upload_id.hex}.part"
    uploads.create_empty(relative)
    try:
        with transaction.atomic():
            upload = Upload(
                id=upload_id,
                subject=subject,
                injection=injection,
                scanner=scanner,
                hours_after_injection=request.hours_after_injection,
                filename=request.filename[:255],
                length=request.length,
                sha256=sha,
                path=relative,
                created_by=actor,
            )
            upload.full_clean()
            upload.save(force_insert=True)
            record_event(
                actor=actor,
                action=AuditAction.UPLOAD_STARTED,
                object_type="imaging.upload",
                object_id=upload.pk,
                trial_id=subject.trial_id,
                site_id=subject.site_id,
                subject_id=subject.pk,
                changes={
                    "length": [None, request.length],
                    "sha256": [None, sha],
                    "filename": [None, upload.filename],
                    "hours_after_injection": [None, upload.hours_after_injection],
                },
            )
    except BaseException:
        uploads.remove(relative)
        raise
    return upload


def calibration_upload_create(*, actor, request: CalibrationUploadRequest) -> Upload:
    """Start a resumable upload of a calibration MDF for ``request.scanner``'s library
    (imaging staff of the scanner's site); a file already in that library is refused here,
    before any byte is sent."""
    scanner = request.scanner
    site = scanner.site
    access.require_role(actor, site=site, roles=REGISTER_ROLES, action="upload calibrations")
    sha = _checked_size_and_sha256(request.length, request.sha256, "calibration")
    existing = SystemMatrix.objects.filter(scanner=scanner, sha256=sha).first()
    if existing is not None:
        raise RuleViolation(
            "duplicate_system_matrix",
            f"This calibration (sha256 {sha[:12]}…) is already in the library of scanner {scanner.name} "
            f"as {existing.describe()}.",
        )
    upload_id = uuid.uuid4()
    relative = f"imaging/uploads/{upload_id.hex}.part"
    uploads.create_empty(relative)
    try:
        with transaction.atomic():
            upload = Upload(
                id=upload_id,
                kind=Upload.Kind.CALIBRATION,
                scanner=scanner,
                filename=request.filename[:255],
                length=request.length,
                sha256=sha,
                path=relative,
                created_by=actor,
            )
            upload.full_clean()
            upload.save(force_insert=True)
            record_event(
                actor=actor,
                action=AuditAction.UPLOAD_STARTED,
                object_type="imaging.upload",
                object_id=upload.pk,
                trial_id=site.trial_id,
                site_id=site.pk,
                changes={
                    "kind": [None, Upload.Kind.CALIBRATION],
                    "scanner": [None, scanner.pk],
                    "length": [None, request.length],
                    "sha256": [None, sha],
                    "filename": [None, upload.filename],
                },
            )
    except BaseException:
        uploads.remove(relative)
        raise
    return upload


def _check_upload_writer(actor, upload: Upload) -> None:
    if upload.kind == Upload.Kind.CALIBRATION:
        access.require_role(actor, site=upload.scanner.site, roles=REGISTER_ROLES, action="upload calibrations")
    else:
        access.require_role(actor, site=upload.scanner.site, roles=UPLOAD_ROLES, action="upload scans")
    if upload.status == Upload.Status.TERMINATED:
        raise RuleViolation("upload_terminated", f"Upload {upload.pk} is {upload.status}.")
    if upload.status != Upload.Status.IN_PROGRESS:
        raise RuleViolation("upload_closed", f"Upload {upload.pk} is {upload.status}.")


@dataclass(frozen=True)
class AppendOutcome:
    upload: Upload
    checksum_ok: bool
    scan: Scan | None


def upload_append(
    *, actor, upload: Upload, offset: int, source, checksum: bytes | None, then: Callable[[Scan], None] | None = None
) -> AppendOutcome:
    """Append one PATCH body at ``offset``; complete the upload when it reaches the length.

    ``source`` gives the body: a ``config.request_body.BodySource`` (``body_source(request)``,
    or any binary file: it has ``readinto``). ``then``: called with the new scan in the
    transaction that creates it (the interface records its first task there)."""
    _check_upload_writer(actor, upload)
    # One writer at a time on the file; offset and status are read again once it is ours,
    # since another PATCH may have moved or closed the upload since the caller loaded it.
    with uploads.exclusive(upload.path):
        upload.refresh_from_db(fields=["offset", "status"])
        _check_upload_writer(actor, upload)
        if offset != upload.offset:
            raise RuleViolation(
                "offset_mismatch",
                f"Upload-Offset {offset} does not match the server's offset "
                f"{upload.offset}: resume from {upload.offset}.",
            )
        result = uploads.append_chunk(
            upload.path, offset=offset, source=source, max_bytes=upload.length - offset, expected_digest=checksum
        )
        if not result.checksum_ok:
            return AppendOutcome(upload, False, None)
        new_offset = offset + result.written
        # Conditional on the old offset: two PATCHes racing on one upload cannot both move it.
        if not Upload.objects.filter(pk=upload.pk, offset=offset, status=Upload.Status.IN_PROGRESS).update(
            offset=new_offset, updated_at=timezone.now()
        ):
            raise RuleViolation(
                "offset_mismatch", "Another request changed this upload at the same time: HEAD and resume."
            )
        upload.offset = new_offset
        scan = None
        if new_offset == upload.length:
            if upload.kind == Upload.Kind.CALIBRATION:
                calibration_upload_complete(actor=actor, upload=upload)
            else:
                scan = upload_complete(actor=actor, upload=upload, then=then)
    return AppendOutcome(upload, True, scan)


def calibration_upload_complete(*, actor, upload: Upload) -> Upload:
    """The last byte of a calibration arrived: the file waits, complete, to be registered
    (its whole-file sha256 is checked then)."""
    site = upload.scanner.site
    with transaction.atomic():
        locked = Upload.objects.select_for_update().get(pk=upload.pk)
        if locked.status != Upload.Status.IN_PROGRESS:
            raise RuleViolation("upload_closed", f"Upload {upload.pk} is {locked.status}.")
        now = timezone.now()
        Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.COMPLETED, completed_at=now)
        record_event(
            actor=actor,
            action=AuditAction.UPLOAD_COMPLETED,
            object_type="imaging.upload",
            object_id=upload.pk,
            trial_id=site.trial_id,
            site_id=site.pk,
            changes={"kind": [None, Upload.Kind.CALIBRATION], "sha256": [None, upload.sha256]},
        )
    upload.status, upload.completed_at = Upload.Status.COMPLETED, now
    return upload


def _scan_upload_parts(upload: Upload) -> tuple[Subject, Injection, float]:
    """A scan upload's subject, injection and time point (the database holds that a scan
    upload has all three)."""
    if upload.subject is None or upload.injection is None or upload.hours_after_injection is None:
        raise RuleViolation("not_a_scan_upload", f"Upload {upload.pk} is a {upload.kind} upload, not a scan's.")
    return upload.subject, upload.injection, upload.hours_after_injection


def upload_complete(*, actor, upload: Upload, then: Callable[[Scan], None] | None = None) -> Scan:
    subject, injection, hours = _scan_upload_parts(upload)
    # The whole-file sha256 is checked by scan_validate (the ingest task), not here.
    try:
        assert_imaging_consent(subject, injection=injection, hours_after_injection=hours)
    except RuleViolation as exc:
        _refuse_upload(actor=actor, subject=subject, upload=upload, code=exc.code, message=exc.message)
    duplicate = _duplicate_scan(subject, upload.sha256)
    if duplicate is not None:
        raise RuleViolation(
            "duplicate_scan",
            f"This file was already uploaded for subject {subject.code} as scan #{duplicate.pk} ({duplicate.status}).",
        )
    relative = f"imaging/scans/{subject.pk}/{upload.pk.hex}/original.mdf"
    target = uploads.media_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with transaction.atomic():
            locked = Upload.objects.select_for_update().get(pk=upload.pk)
            if locked.status != Upload.Status.IN_PROGRESS:
                raise RuleViolation("upload_closed", f"Upload {upload.pk} is {locked.status}.")
            scan = Scan(
                subject=subject,
                injection=injection,
                scanner=upload.scanner,
                upload=upload,
                hours_after_injection=hours,
                filename=upload.filename,
                file=relative,
                size_bytes=upload.length,
                sha256=upload.sha256,
                created_by=actor,
            )
            scan.full_clean(validate_unique=False)
            scan.save()
            Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.COMPLETED, completed_at=timezone.now())
            record_event(
                actor=actor,
                action=AuditAction.UPLOAD_COMPLETED,
                object_type="imaging.upload",
                object_id=upload.pk,
                trial_id=subject.trial_id,
                site_id=subject.site_id,
                subject_id=subject.pk,
                changes={"scan": [None, scan.pk], "sha256": [None, upload.sha256]},
            )
            _audit_scan(
                actor=actor,
                action=AuditAction.SCAN_STATUS_CHANGED,
                scan=scan,
                changes={"status": [None, ScanStatus.RECEIVED]},
            )
            if then is not None:
                then(scan)
            # The rename is the last step: if it fails, the transaction rolls back and the bytes stay put.
            uploads.media_path(upload.path).rename(target)
    except IntegrityError:
        duplicate = _duplicate_scan(subject, upload.sha256)
        raise RuleViolation(
            "duplicate_scan",
            f"This file was already uploaded for subject {subject.code}"
            + (f" as scan #{duplicate.pk}." if duplicate else "."),
        ) from None
    upload.status = Upload.Status.COMPLETED
    return scan


def upload_terminate(*, actor, upload: Upload) -> None:
    _check_upload_writer(actor, upload)
    with transaction.atomic():
        Upload.objects.filter(pk=upload.pk).update(status=Upload.Status.TERMINATED)
        site = upload.scanner.site
        record_event(
            actor=actor,
            action=AuditAction.UPLOAD_REFUSED,
            object_type="imaging.upload",
            object_id=upload.pk,
            trial_id=site.trial_id,
            site_id=site.pk,
            subject_id=upload.subject_id,
            changes={"status": [Upload.Status.IN_PROGRESS, Upload.Status.TERMINATED]},
            reason="terminated by the client",
        )
        transaction.on_commit(lambda: uploads.remove(upload.path))


def scan_from_recording(
    *, actor, injection: Injection, scanner: Scanner, path: str, filename: str, hours_after_injection: float
) -> Scan:
    """Register a file already stored under MEDIA_ROOT (``path``, relative: a live session's
    recording) as a scan of ``injection``, as a completed upload does: its size and SHA-256
    recorded, status received, audited; the caller's interface queues it
    (``imaging.tasks.queue_next_step``). The same rules as an upload: imaging staff or a
    coordinator of the subject's site, the subject not withdrawn, a scanner of that site,
    the imaging consent the time point needs in force, no second scan of the same bytes."""
    subject = injection.subject
    access.require_role(actor, site=subject.site, roles=UPLOAD_ROLES, action="record scans")
    if subject.status == Subject.Status.WITHDRAWN:
        raise RuleViolation(
            "subject_withdrawn", f"Subject {subject.code} has withdrawn from the trial: no new scans.", field="subject"
        )
    if hours_after_injection < 0:
        raise RuleViolation("invalid_time_point", "The time point cannot be before the injection.", field="hours")
    if scanner.site_id != subject.site_id:
        raise RuleViolation(
            "scanner_not_found",
            f"Scanner #{scanner.pk} is not a scanner of site {subject.site.code}.",
            field="scanner",
        )
    stored = uploads.media_path(path)
    if not stored.is_file():
        raise RuleViolation("recording_missing", "The recorded file is not in storage: nothing to register.")
    size, sha = stored.stat().st_size, uploads.file_sha256(path)
    assert_imaging_consent(subject, injection=injection, hours_after_injection=hours_after_injection)
    duplicate = _duplicate_scan(subject, sha)
    if duplicate is not None:
        raise RuleViolation(
            "duplicate_scan",
            f"This file was already registered for subject {subject.code} as scan #{duplicate.pk} ({duplicate.status}).",
        )
    try:
        with transaction.atomic():
            scan = Scan(
                subject=subject,
                injection=injection,
                scanner=scanner,
                hours_after_injection=hours_after_injection,
                filename=filename[:255],
                file=path,
                size_bytes=size,
                sha256=sha,
                created_by=actor,
            )
            scan.full_clean(validate_unique=False)
            scan.save()
            _audit_scan(
                actor=actor,
                action=AuditAction.SCAN_STATUS_CHANGED,
                scan=scan,
                changes={"status": [None, ScanStatus.RECEIVED], "sha256": [None, sha], "file": [None, filename]},
                reason="recorded from a live session",
            )
    except IntegrityError:
        raise RuleViolation("duplicate_scan", f"This file was already registered for subject {subject.code}.") from None
    return scan
