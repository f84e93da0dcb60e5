"""Every write of the scan pipeline, with its rules and its audit event.

Shape as in ``trials/services.py``: check roles and rules first, then write and
``record_event`` in one ``transaction.atomic``. A refusal raises ``RuleViolation``
before anything is written (a refused upload writes only its UPLOAD_REFUSED event).

Scan processing (``scan_validate``, ``scan_reconstruct``, ``scan_quantify``) is what
the Celery tasks call. Each one claims the scan with a conditional UPDATE (healthchecks'
habit), does its slow work outside any transaction, and records the outcome only if
its claim still holds, so a redelivered or duplicated task never makes a second result.
Services queue no task: ``imaging.tasks`` chains the steps, and the interface that
completes an upload or retries a scan queues its next step (``tasks.queue_next_step``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from compliance.actions import AuditAction
from compliance.audit import record_event
from config.errors import RuleViolation
from config.reasons import require_reason
from imaging import processing, uploads
from imaging.models import (
    SCAN_TRANSITIONS,
    Alert,
    Measurement,
    Reconstruction,
    RegionOfInterest,
    RoiKind,
    Scan,
    Scanner,
    ScanStatus,
    SystemMatrix,
    Upload,
)
from imaging.selectors import injected_iron_ng
from recon.params import ReconParams
from recon.quantify import GEOMETRY_SIZE_KEYS
from trials.models import Injection, Role, Site, Subject
from trials.permissions import access
from trials.services import assert_scope_active

log = logging.getLogger(__name__)

UPLOAD_ROLES = frozenset({Role.IMAGING_STAFF, Role.COORDINATOR})
LIBRARY_ROLES = frozenset({Role.COORDINATOR, Role.IMAGING_STAFF})
ROI_ROLES = frozenset({Role.COORDINATOR, Role.IMAGING_STAFF, Role.INVESTIGATOR})
# Drive amplitudes of a scan and a calibration may differ by this much (relative).
AMPLITUDE_TOLERANCE = 0.02
BASE_FREQUENCY_TOLERANCE = 1e-6


def _audit_scan(
    *,
    actor,
    action: AuditAction,
    scan: Scan,
    changes: dict,
    reason: str = "",
    object_type="imaging.scan",
    object_id=None,
):
    subject = scan.subject
    record_event(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id or scan.pk,
        trial_id=subject.trial_id,
        site_id=subject.site_id,
        subject_id=subject.pk,
        changes=changes,
        reason=reason,
    )


# --------------------------------------------------------------------------- scanners and system matrices


def scanner_register(
    *,
    actor,
    site: Site,
    name: str,
    manufacturer: str,
    model: str,
    topology: str,
    base_frequency_hz: float,
    dividers: list[int],
    drive_amplitudes_t: list[float],
    gradient_t_per_m: list[float],
) -> Scanner:
    if actor is not None:
        access.require_role(actor, site=site, roles={Role.COORDINATOR}, action="register scanners")
    if not dividers or len(dividers) != len(drive_amplitudes_t) or any(int(d) <= 0 for d in dividers):
        raise RuleViolation(
            "invalid_drive_field",
            "Give one positive divider and one drive amplitude per drive "
            f"channel (got dividers {dividers}, amplitudes {drive_amplitudes_t}).",
            field="dividers",
            status_code=400,
        )
    with transaction.atomic():
        scanner = Scanner(
            site=site,
            name=name,
            manufacturer=manufacturer,
            model=model,
            topology=topology,
            base_frequency_hz=base_frequency_hz,
            dividers=[int(d) for d in dividers],
            drive_amplitudes_t=[float(a) for a in drive_amplitudes_t],
            gradient_t_per_m=[float(g) for g in gradient_t_per_m],
        )
        scanner.full_clean()
        scanner.save()
        record_event(
            actor=actor,
            action=AuditAction.SCANNER_REGISTERED,
            object_type="imaging.scanner",
            object_id=scanner.pk,
            trial_id=site.trial_id,
            site_id=site.pk,
            changes={
                "name": [None, name],
                "dividers": [None, scanner.dividers],
                "drive_amplitudes_t": [None, scanner.drive_amplitudes_t],
            },
        )
    return scanner


def _copy_into_storage(source: Path, relative: str) -> tuple[str, int]:
    target = uploads.media_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return processing.sha256_file(target), target.stat().st_size


def system_matrix_register(
    *, actor, scanner: Scanner, name: str, tracer_product: str, source_path: str | Path, nanoparticle_lot=None
) -> SystemMatrix:
    """Copy a calibration MDF into the library, validate it with recon and record what it holds."""
    if actor is not None:
        access.require_role(actor, site=scanner.site, roles=LIBRARY_ROLES, action="register system matrices")
    if nanoparticle_lot is not None and nanoparticle_lot.trial_id != scanner.site.trial_id:
        raise RuleViolation(
            "lot_of_other_trial",
            "The nanoparticle lot belongs to another trial.",
            field="nanoparticle_lot",
            status_code=400,
        )
    relative = f"imaging/system_matrices/{uuid.uuid4().hex}.mdf"
    # Copying, hashing and validating are slow: done before the transaction, undone on refusal.
    sha256, size = _copy_into_storage(Path(source_path), relative)
    stored = uploads.media_path(relative)
    try:
        inspection = processing.inspect(stored)
        if not inspection.valid:
            raise RuleViolation(
                "invalid_system_matrix",
                f"The calibration file is not valid: {inspection.problems_text}",
                field="file",
                status_code=400,
            )
        if inspection.kind != "calibration":
            raise RuleViolation(
                "not_a_calibration",
                f"The file is a {inspection.kind} MDF, not a calibration (a system matrix needs /calibration).",
                field="file",
                status_code=400,
            )
        summary = processing.calibration_summary(stored)
        if not summary["delta_concentration_mol_per_l"]:
            raise RuleViolation(
                "no_delta_concentration",
                "The calibration has no /tracer/concentration: the delta "
                "sample's concentration is needed to quantify iron.",
                field="file",
                status_code=400,
            )
        if SystemMatrix.objects.filter(scanner=scanner, sha256=sha256).exists():
            raise RuleViolation(
                "duplicate_system_matrix",
                f"This calibration (sha256 {sha256[:12]}…) is already in the library of scanner {scanner.name}.",
            )
        acq = summary["acquisition"]
        with transaction.atomic():
            sm = SystemMatrix(
                scanner=scanner,
                name=name,
                tracer_product=tracer_product,
                nanoparticle_lot=nanoparticle_lot,
                file=relative,
                size_bytes=size,
                sha256=sha256,
                validation_report=inspection.report,
                grid_size=summary["grid_size"],
                field_of_view_m=summary["field_of_view_m"],
                field_of_view_center_m=summary["field_of_view_center_m"],
                frequencies_count=summary["frequencies_count"],
                receive_channels=summary["receive_channels"],
                snr_summary=summary["snr_summary"],
                delta_concentration_mol_per_l=summary["delta_concentration_mol_per_l"],
                base_frequency_hz=acq["base_frequency_hz"],
                dividers=acq["dividers"],
                drive_amplitudes_t=acq["drive_amplitudes_t"],
                registered_by=actor,
            )
            sm.full_clean()
            sm.save()
            record_event(
                actor=actor,
                action=AuditAction.SYSTEM_MATRIX_REGISTERED,
                object_type="imaging.systemmatrix",
                object_id=sm.pk,
                trial_id=scanner.site.trial_id,
                site_id=scanner.site_id,
                changes={
                    "sha256": [None, sha256],
                    "tracer_product": [None, tracer_product],
                    "grid_size": [None, sm.grid_size],
                    "dividers": [None, sm.dividers],
                },
            )
    except BaseException:
        uploads.remove(relative)
        raise
    return sm


def system_matrix_retire(*, actor, system_matrix: SystemMatrix, reason: str) -> SystemMatrix:
    if actor is not None:
        access.require_role(
            actor, site=system_matrix.scanner.site, roles=LIBRARY_ROLES, action="retire system matrices"
        )
    reason = require_reason(reason)
    with transaction.atomic():
        sm = SystemMatrix.objects.select_for_update().select_related("scanner__site").get(pk=system_matrix.pk)
        if not sm.active:
            raise RuleViolation("already_retired", f"System matrix {sm.describe()} is already retired.")
        sm.active, sm.retired_at = False, timezone.now()
        sm.save(update_fields=["active", "retired_at"])
        record_event(
            actor=actor,
            action=AuditAction.SYSTEM_MATRIX_RETIRED,
            object_type="imaging.systemmatrix",
            object_id=sm.pk,
            trial_id=sm.scanner.site.trial_id,
            site_id=sm.scanner.site_id,
            changes={"active": [True, False]},
            reason=reason,
        )
    return sm


def _tracer_of(injection: Injection):
    lot = injection.batch.nanoparticle_lot
    return lot


def _candidates(scanner: Scanner, lot) -> list[SystemMatrix]:
    product = lot.product if lot is not None else ""
    return [
        sm
        for sm in SystemMatrix.objects.filter(scanner=scanner, active=True).select_related("nanoparticle_lot")
        if sm.tracer_product.strip().lower() == product.strip().lower()
        and (sm.nanoparticle_lot_id is None or (lot is not None and sm.nanoparticle_lot_id == lot.pk))
    ]


def _available(scanner: Scanner) -> str:
    active = list(SystemMatrix.objects.filter(scanner=scanner, active=True).select_related("nanoparticle_lot"))
    return "; ".join(sm.describe() for sm in active) or "none"


def require_system_matrix_for_tracer(scanner: Scanner, injection: Injection) -> None:
    """Refuse an upload early when no active calibration of the scanner fits the tracer at all."""
    lot = _tracer_of(injection)
    if not _candidates(scanner, lot):
        product = lot.product if lot is not None else "(no labelled tracer)"
        raise RuleViolation(
            "no_system_matrix",
            f"No active system matrix for scanner {scanner.name} and tracer "
            f"{product}; available: {_available(scanner)}.",
        )


def match_system_matrix(scanner: Scanner, injection: Injection, acquisition: dict) -> SystemMatrix:
    """The newest active system matrix of the scan's scanner whose drive field (base
    frequency, dividers, amplitudes within tolerance) and tracer fit; else a RuleViolation
    that says exactly why none fits."""
    lot = _tracer_of(injection)
    dividers = [int(d) for d in acquisition["dividers"]]
    amplitudes = acquisition["drive_amplitudes_t"]
    for sm in _candidates(scanner, lot):
        if [int(d) for d in sm.dividers] != dividers:
            continue
        if (
            abs(sm.base_frequency_hz - acquisition["base_frequency_hz"])
            > BASE_FREQUENCY_TOLERANCE * sm.base_frequency_hz
        ):
            continue
        if len(sm.drive_amplitudes_t) != len(amplitudes) or any(
            abs(a - b) > AMPLITUDE_TOLERANCE * max(abs(a), 1e-12)
            for a, b in zip(sm.drive_amplitudes_t, amplitudes, strict=True)
        ):
            continue
        return sm
    product = lot.product if lot is not None else "(no labelled tracer)"
    mt = "/".join(f"{a * 1e3:g}" for a in amplitudes)
    raise RuleViolation(
        "no_system_matrix",
        f"No active system matrix for scanner {scanner.name} with dividers {'/'.join(map(str, dividers))}, "
        f"drive amplitudes {mt} mT, base frequency {acquisition['base_frequency_hz']:g} Hz and tracer {product}; "
        f"available: {_available(scanner)}.",
    )


# --------------------------------------------------------------------------- uploads


@dataclass(frozen=True)
class UploadRequest:
    subject: Subject
    injection_id: int
    scanner_id: int
    hours_after_injection: float
    sha256: str
    filename: str
    length: int


def _refuse_upload(*, actor, subject: Subject, code: str, message: str, status_code: int = 409, upload=None):
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
    raise RuleViolation(code, message, status_code=status_code)


def _duplicate_scan(subject: Subject, sha256: str) -> Scan | None:
    return Scan.objects.filter(subject=subject, sha256=sha256).exclude(status=ScanStatus.REJECTED).first()


def imaging_scopes(*, injection, hours_after_injection: float, scan: Scan | None = None) -> tuple[str, ...]:
    """The consent scopes a scan needs (DOMAIN §4). The first scan of an injection needs
    ``imaging``; a later time point is follow-up imaging and needs
    ``longitudinal_imaging`` as well. "Later" means an earlier time point of the same
    injection is already on file (rejected files do not count)."""
    earlier = Scan.objects.filter(injection=injection, hours_after_injection__lt=hours_after_injection).exclude(
        status=ScanStatus.REJECTED
    )
    if scan is not None:
        earlier = earlier.exclude(pk=scan.pk)
    return ("imaging", "longitudinal_imaging") if earlier.exists() else ("imaging",)


def assert_imaging_consent(
    subject: Subject, *, injection, hours_after_injection: float, scan: Scan | None = None
) -> None:
    """Raise RuleViolation unless every scope this scan needs is in force now."""
    for scope in imaging_scopes(injection=injection, hours_after_injection=hours_after_injection, scan=scan):
        assert_scope_active(subject, scope)


def upload_create(*, actor, request: UploadRequest) -> Upload:
    subject = request.subject
    access.require_role(actor, site=subject.site, roles=UPLOAD_ROLES, action="upload scans")
    if request.length > settings.IMAGING_UPLOAD_MAX_BYTES:
        raise RuleViolation(
            "upload_too_large",
            f"Upload-Length {request.length} bytes exceeds the maximum scan size "
            f"of {settings.IMAGING_UPLOAD_MAX_BYTES} bytes.",
            status_code=413,
        )
    if request.length <= 0:
        raise RuleViolation("empty_upload", "Upload-Length must be at least 1 byte.", status_code=400)
    sha = request.sha256.strip().lower()
    if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise RuleViolation(
            "invalid_sha256",
            "Upload-Metadata sha256 must be the 64-digit hex SHA-256 of the file.",
            field="sha256",
            status_code=400,
        )
    if subject.status == Subject.Status.WITHDRAWN:
        raise RuleViolation(
            "subject_withdrawn", f"Subject {subject.code} has withdrawn from the trial: no new scans.", field="subject"
        )
    if request.hours_after_injection < 0:
        raise RuleViolation(
            "invalid_time_point", "The time point cannot be before the injection.", field="hours", status_code=400
        )
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
            status_code=400,
        )
    scanner = Scanner.objects.filter(pk=request.scanner_id, site_id=subject.site_id).first()
    if scanner is None:
        raise RuleViolation(
            "scanner_not_found",
            f"Scanner #{request.scanner_id} is not a scanner of site {subject.site.code}.",
            field="scanner",
            status_code=400,
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


def _check_upload_writer(actor, upload: Upload) -> None:
    access.require_role(actor, site=upload.subject.site, roles=UPLOAD_ROLES, action="upload scans")
    if upload.status != Upload.Status.IN_PROGRESS:
        raise RuleViolation(
            "upload_closed",
            f"Upload {upload.pk} is {upload.status}.",
            status_code=404 if upload.status == Upload.Status.TERMINATED else 409,
        )


@dataclass(frozen=True)
class AppendOutcome:
    upload: Upload
    checksum_ok: bool
    scan: Scan | None


def upload_append(*, actor, upload: Upload, offset: int, source, checksum: bytes | None) -> AppendOutcome:
    """Append one PATCH body at ``offset``; complete the upload when it reaches the length.

    ``source`` gives the body: a ``config.request_body.BodySource`` (``body_source(request)``,
    or any binary file: it has ``readinto``)."""
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
        scan = upload_complete(actor=actor, upload=upload) if new_offset == upload.length else None
    return AppendOutcome(upload, True, scan)


def upload_complete(*, actor, upload: Upload) -> Scan:
    subject = upload.subject
    # The whole-file sha256 is checked by scan_validate (the ingest task), not here.
    try:
        assert_imaging_consent(subject, injection=upload.injection, hours_after_injection=upload.hours_after_injection)
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
                injection=upload.injection,
                scanner=upload.scanner,
                upload=upload,
                hours_after_injection=upload.hours_after_injection,
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
        subject = upload.subject
        record_event(
            actor=actor,
            action=AuditAction.UPLOAD_REFUSED,
            object_type="imaging.upload",
            object_id=upload.pk,
            trial_id=subject.trial_id,
            site_id=subject.site_id,
            subject_id=subject.pk,
            changes={"status": [Upload.Status.IN_PROGRESS, Upload.Status.TERMINATED]},
            reason="terminated by the client",
        )
        transaction.on_commit(lambda: uploads.remove(upload.path))


# --------------------------------------------------------------------------- scan state machine


def _check_transition(old: str, new: str) -> None:
    if new not in SCAN_TRANSITIONS[old]:
        raise RuleViolation("invalid_transition", f"A scan cannot go from {old} to {new}.")


# A claim (a scan step, a PACS send) whose worker is gone: older than the broker's visibility
# timeout. A message never picked up (the filesystem broker loses the tasks of a killed
# worker): its row untouched for a minute.
LOST_MESSAGE_QUIET_SECONDS = 60


def claims_stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=settings.CELERY_VISIBILITY_TIMEOUT)


def quiet_since() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=LOST_MESSAGE_QUIET_SECONDS)


def scan_claim(*, scan_id: int, from_status: str, to_status: str, token: str) -> Scan | None:
    """Move a scan from ``from_status`` to ``to_status`` for the task ``token``.

    One conditional UPDATE: it succeeds when the scan is still in ``from_status``, or
    already in ``to_status`` under the same token (the broker redelivered this task
    after its worker died) or under a claim older than the visibility timeout (its
    worker is gone). Each claim is a new attempt. None: another worker has it, or the
    step is done; the caller exits quietly.
    """
    _check_transition(from_status, to_status)
    now = timezone.now()
    stale = claims_stale_before()
    with transaction.atomic():
        claimable = Q(status=from_status) | Q(status=to_status) & (Q(claim_token=token) | Q(claimed_at__lt=stale))
        previous = Scan.objects.filter(pk=scan_id).values_list("status", flat=True).first()
        updated = Scan.objects.filter(claimable, pk=scan_id).update(
            status=to_status,
            attempt=F("attempt") + 1,
            claim_token=token,
            claimed_at=now,
            progress_stage=to_status,
            progress_percent=0,
            updated_at=now,
        )
        if not updated:
            return None
        scan = Scan.objects.select_related(
            "subject", "injection__batch__nanoparticle_lot", "scanner", "system_matrix"
        ).get(pk=scan_id)
        _audit_scan(
            actor=None,
            action=AuditAction.SCAN_STATUS_CHANGED,
            scan=scan,
            changes={"status": [previous, to_status], "attempt": [scan.attempt - 1, scan.attempt]},
            reason="" if previous == from_status else "claimed again: the previous worker's task was redelivered",
        )
    return scan


# The MDF's own top-level groups: a dataset path under them (/measurement/data) tells the
# site what to fix in its file, and stays in a reason.
_MDF_GROUPS = (
    "study",
    "experiment",
    "scanner",
    "tracer",
    "acquisition",
    "measurement",
    "calibration",
    "reconstruction",
    "custom",
)
_SERVER_PATH = re.compile(r"(?<![\w./-])/(?!(?:{})\b)[\w.@+~-]+(?:/[\w.@+~-]*)+".format("|".join(_MDF_GROUPS)))


def _without_server_paths(value, scan: Scan):
    """``value`` (a reason, or a report of them) with no path of the server's file system.

    recon and h5py name the file they opened; that path tells a site nothing and an
    attacker where the files are kept. The scan's own file becomes "the uploaded file",
    any other absolute path "[server path]"."""
    if isinstance(value, dict):
        return {key: _without_server_paths(item, scan) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_server_paths(item, scan) for item in value]
    if not isinstance(value, str) or "/" not in value:
        return value
    if scan.file:
        stored = uploads.media_path(scan.file)
        for path in sorted({str(stored), os.path.realpath(stored)}, key=len, reverse=True):
            value = value.replace(path, "the uploaded file")
    for root in sorted({str(settings.MEDIA_ROOT), os.path.realpath(settings.MEDIA_ROOT)}, key=len, reverse=True):
        value = value.replace(root, "[server path]")
    return _SERVER_PATH.sub("[server path]", value)


def _finish(scan: Scan, token: str, new_status: str, *, fields: dict, reason: str = "") -> bool:
    """Conditional move out of the claimed status; False when the claim was lost.

    The one place a scan's reason is stored (status_reason, validation report, audit
    event): server paths are taken out here, whatever produced the message."""
    old = scan.status
    _check_transition(old, new_status)
    reason = _without_server_paths(reason, scan)
    fields = {
        name: _without_server_paths(value, scan) if name in ("status_reason", "validation_report") else value
        for name, value in fields.items()
    }
    updated = Scan.objects.filter(pk=scan.pk, status=old, claim_token=token, attempt=scan.attempt).update(
        status=new_status, updated_at=timezone.now(), **fields
    )
    if not updated:
        return False
    _audit_scan(
        actor=None,
        action=AuditAction.SCAN_STATUS_CHANGED,
        scan=scan,
        changes={"status": [old, new_status]},
        reason=reason,
    )
    scan.status = new_status
    for key, value in fields.items():
        setattr(scan, key, value)
    return True


def scan_set_progress(*, scan: Scan, token: str, stage: str, fraction: float) -> None:
    # Not a state change: no audit event, and only while this task holds the claim.
    Scan.objects.filter(pk=scan.pk, claim_token=token, attempt=scan.attempt).update(
        progress_stage=stage[:32], progress_percent=round(max(0.0, min(1.0, fraction)) * 100, 1)
    )


def scan_fail(*, scan_id: int, token: str, reason: str, retryable: bool) -> bool:
    with transaction.atomic():
        scan = Scan.objects.select_related("subject").get(pk=scan_id)
        if ScanStatus.FAILED not in SCAN_TRANSITIONS[scan.status] or scan.claim_token != token:
            return False
        return _finish(
            scan,
            token,
            ScanStatus.FAILED,
            fields={"status_reason": reason[:4000], "retryable": retryable},
            reason=reason[:4000],
        )


def scan_validate(*, scan_id: int, token: str) -> Scan | None:
    scan = scan_claim(scan_id=scan_id, from_status=ScanStatus.RECEIVED, to_status=ScanStatus.VALIDATING, token=token)
    if scan is None:
        return None
    # First the bytes: are they the file the site declared? (Streaming: bounded memory.)
    received_sha256 = uploads.file_sha256(scan.file)
    inspection = processing.inspect(uploads.media_path(scan.file))
    reason, system_matrix = "", None
    if received_sha256 != scan.sha256:
        reason = (
            f"The received file's sha256 {received_sha256} differs from the sha256 {scan.sha256} declared when "
            "the upload started: the file is corrupt or not the one declared. The bytes are kept; "
            "upload the file again."
        )
    elif not inspection.valid:
        reason = f"The file is not a valid MDF scan: {inspection.problems_text}"
    elif inspection.kind != "measurement":
        reason = (
            f"The file is a {inspection.kind} MDF, not a measurement: upload a scan "
            "(a calibration belongs in the system-matrix library)."
        )
    else:
        try:
            assert_imaging_consent(
                scan.subject, injection=scan.injection, hours_after_injection=scan.hours_after_injection, scan=scan
            )
            system_matrix = match_system_matrix(scan.scanner, scan.injection, inspection.acquisition or {})
        except RuleViolation as exc:
            reason = exc.message
    with transaction.atomic():
        if reason:
            _finish(
                scan,
                token,
                ScanStatus.REJECTED,
                fields={
                    "status_reason": reason[:4000],
                    "retryable": False,
                    "validation_report": inspection.report,
                    "acquisition": inspection.acquisition,
                },
                reason=reason[:4000],
            )
        else:
            _finish(
                scan,
                token,
                ScanStatus.VALIDATED,
                fields={
                    "validation_report": inspection.report,
                    "acquisition": inspection.acquisition,
                    "system_matrix_id": system_matrix.pk if system_matrix else None,
                    "status_reason": "",
                },
            )
    return scan


def _consent_stops(scan: Scan, token: str) -> bool:
    """Withdrawal stops processing for the withdrawn scope (DOMAIN §4): a claimed scan
    whose subject has no imaging consent in force now fails, not retryable; bytes kept."""
    try:
        assert_imaging_consent(
            scan.subject, injection=scan.injection, hours_after_injection=scan.hours_after_injection, scan=scan
        )
    except RuleViolation as exc:
        with transaction.atomic():
            _finish(
                scan,
                token,
                ScanStatus.FAILED,
                fields={"status_reason": exc.message[:4000], "retryable": False},
                reason=exc.message[:4000],
            )
        return True
    return False


def default_recon_params() -> ReconParams:
    return ReconParams()


def _reconstruction_path(scan: Scan, attempt: int) -> str:
    return f"imaging/scans/{scan.subject_id}/reconstructions/scan{scan.pk}-attempt{attempt}.mdf"


def scan_reconstruct(*, scan_id: int, token: str, cache=None, params: ReconParams | None = None) -> Scan | None:
    scan = scan_claim(
        scan_id=scan_id, from_status=ScanStatus.VALIDATED, to_status=ScanStatus.RECONSTRUCTING, token=token
    )
    if scan is None:
        return None
    if _consent_stops(scan, token):
        return scan
    sm = scan.system_matrix
    if sm is None:  # validation always sets it; a scan without one cannot be reconstructed
        raise RuntimeError(f"scan #{scan.pk} is validated without a system matrix")
    params = params or default_recon_params()
    sm_path = uploads.media_path(sm.file)
    if cache is None:
        loaded = processing.load_system_matrix(sm_path)
    else:
        loaded = cache.get_or_load(sm.sha256, lambda: processing.load_system_matrix(sm_path))
    relative = _reconstruction_path(scan, scan.attempt)
    out = uploads.media_path(relative)
    out.parent.mkdir(parents=True, exist_ok=True)
    provenance = {
        "scan_sha256": scan.sha256,
        "system_matrix_id": sm.pk,
        "system_matrix_sha256": sm.sha256,
        "software_version": processing.software_version(),
    }
    summary = processing.reconstruct(
        loaded,
        uploads.media_path(scan.file),
        out,
        params,
        provenance=provenance,
        progress=lambda stage, fraction: scan_set_progress(scan=scan, token=token, stage=stage, fraction=fraction),
    )
    file_sha = processing.sha256_file(out)
    with transaction.atomic():
        if not _finish(
            scan, token, ScanStatus.RECONSTRUCTED, fields={"progress_stage": "reconstructed", "progress_percent": 100.0}
        ):
            uploads.remove(relative)  # another attempt owns the scan now: leave no second result
            return None
        reconstruction = Reconstruction.objects.create(
            scan=scan,
            attempt=scan.attempt,
            system_matrix=sm,
            system_matrix_sha256=sm.sha256,
            input_sha256=scan.sha256,
            params=params.as_dict(),
            software_version=provenance["software_version"],
            file=relative,
            sha256=file_sha,
            summary=summary,
        )
        _audit_scan(
            actor=None,
            action=AuditAction.RECONSTRUCTION_COMPLETED,
            scan=scan,
            object_type="imaging.reconstruction",
            object_id=reconstruction.pk,
            changes={
                "scan": [None, scan.pk],
                "attempt": [None, scan.attempt],
                "sha256": [None, file_sha],
                "system_matrix_sha256": [None, sm.sha256],
            },
        )
    return scan


def rois_for(scan: Scan) -> list[RegionOfInterest]:
    own = list(RegionOfInterest.objects.filter(scan=scan))
    return own or list(RegionOfInterest.objects.filter(subject_id=scan.subject_id, scan__isnull=True))


def scan_quantify(*, scan_id: int, token: str) -> Scan | None:
    """Measure every ROI of the scan's newest reconstruction; idempotent.

    No separate claim status exists between reconstructed and quantified, so the
    computation (fast) runs first and the write is guarded: the scan row is locked and
    must still be ``reconstructed``; the unique (reconstruction, roi) constraint backs it.
    """
    scan = (
        Scan.objects.select_related("subject__trial", "injection__batch")
        .filter(pk=scan_id, status=ScanStatus.RECONSTRUCTED)
        .first()
    )
    if scan is None:
        return None
    try:
        assert_imaging_consent(
            scan.subject, injection=scan.injection, hours_after_injection=scan.hours_after_injection, scan=scan
        )
    except RuleViolation as exc:
        scan_fail_unclaimed(scan=scan, reason=exc.message, retryable=False)
        return scan
    reconstruction = scan.reconstructions.order_by("-attempt").first()
    iron_per_cell_pg = scan.injection.batch.iron_per_cell_pg
    if reconstruction is None or iron_per_cell_pg is None:  # a reconstructed scan has both
        raise RuntimeError(f"scan #{scan.pk} has no reconstruction or its batch no iron per cell")
    rois = rois_for(scan)
    if not rois:
        scan_fail_unclaimed(
            scan=scan,
            reason=f"No region of interest is defined for scan #{scan.pk} or subject "
            f"{scan.subject.code}: define ROIs, then retry.",
            retryable=True,
        )
        return scan
    specs = [
        processing.RoiSpec(
            r.pk,
            r.name,
            r.kind,
            r.geometry,
            str(uploads.media_path(r.label_file)) if r.label_file else None,
            r.label_value,
        )
        for r in rois
    ]
    injected = injected_iron_ng(scan.injection)
    per_roi, summary = processing.quantify(
        uploads.media_path(reconstruction.file),
        specs,
        injected_iron_ng=injected,
        pg_fe_per_cell=float(iron_per_cell_pg),
        system_matrix_path=uploads.media_path(reconstruction.system_matrix.file),
    )
    threshold = float(scan.subject.trial.off_target_alert_percent)
    with transaction.atomic():
        locked = Scan.objects.select_for_update().select_related("subject").get(pk=scan.pk)
        if locked.status != ScanStatus.RECONSTRUCTED:
            return None
        Measurement.objects.bulk_create(
            [
                Measurement(
                    reconstruction=reconstruction,
                    scan=scan,
                    roi=roi,
                    roi_name=roi.name,
                    roi_kind=roi.kind,
                    **per_roi[roi.pk],
                )
                for roi in rois
            ]
        )
        _finish(
            locked,
            locked.claim_token,
            ScanStatus.QUANTIFIED,
            fields={
                "metrics_summary": summary,
                "claim_token": token,
                "progress_stage": "quantified",
                "progress_percent": 100.0,
            },
        )
        _audit_scan(
            actor=None,
            action=AuditAction.METRICS_RECORDED,
            scan=locked,
            object_type="imaging.reconstruction",
            object_id=reconstruction.pk,
            changes={
                "retention_percent": [None, summary["retention_percent"]],
                "off_target_percent": [None, summary["off_target_percent"]],
                "rois": [None, len(rois)],
            },
        )
        off_target = summary["off_target_percent"]
        if off_target is not None and off_target > threshold:
            alert = Alert.objects.create(
                scan=scan,
                subject=scan.subject,
                kind=Alert.Kind.OFF_TARGET,
                value_percent=off_target,
                threshold_percent=threshold,
                message=f"Off-target iron {off_target:.1f} % of detected iron exceeds the trial's alert threshold "
                f"{threshold:g} % (scan #{scan.pk}, {scan.hours_after_injection:g} h after injection).",
            )
            _audit_scan(
                actor=None,
                action=AuditAction.OFF_TARGET_ALERT_RAISED,
                scan=locked,
                object_type="imaging.alert",
                object_id=alert.pk,
                changes={"value_percent": [None, off_target], "threshold_percent": [None, threshold]},
            )
    return locked


def scan_fail_unclaimed(*, scan: Scan, reason: str, retryable: bool) -> None:
    with transaction.atomic():
        locked = Scan.objects.select_for_update().select_related("subject").get(pk=scan.pk)
        if ScanStatus.FAILED in SCAN_TRANSITIONS[locked.status]:
            _finish(
                locked,
                locked.claim_token,
                ScanStatus.FAILED,
                fields={"status_reason": reason, "retryable": retryable},
                reason=reason,
            )


def scan_retry(*, actor, scan: Scan) -> Scan:
    """Send a retryable failed scan back to the step it failed in."""
    access.require_role(actor, site=scan.subject.site, roles=UPLOAD_ROLES, action="retry scans")
    if scan.status != ScanStatus.FAILED or not scan.retryable:
        raise RuleViolation(
            "not_retryable",
            f"Scan #{scan.pk} is {scan.status}"
            + ("" if scan.status != ScanStatus.FAILED else " and not retryable")
            + ": nothing to retry.",
        )
    back_to = ScanStatus.VALIDATED if scan.system_matrix_id else ScanStatus.RECEIVED
    if scan.reconstructions.exists() and not scan.measurements.exists():
        back_to = ScanStatus.VALIDATED
    with transaction.atomic():
        updated = Scan.objects.filter(pk=scan.pk, status=ScanStatus.FAILED).update(
            status=back_to, status_reason="", retryable=False, claim_token="", updated_at=timezone.now()
        )
        if not updated:
            raise RuleViolation("not_retryable", f"Scan #{scan.pk} changed meanwhile.")
        _audit_scan(
            actor=actor,
            action=AuditAction.SCAN_STATUS_CHANGED,
            scan=scan,
            changes={"status": [ScanStatus.FAILED, back_to]},
            reason="retry",
        )
    scan.refresh_from_db()
    return scan


def stalled_scans() -> list[tuple[int, str]]:
    """(id, status) of the scans whose step lost its task (the filesystem broker has no
    redelivery of its own): received, validated or reconstructed for longer than a minute,
    or claimed longer ago than the visibility timeout. ``tasks.recover_stalled_scans``
    queues their step again; claims make a duplicate harmless."""
    stale, quiet = claims_stale_before(), quiet_since()
    return list(
        Scan.objects.filter(
            Q(status__in=[ScanStatus.RECEIVED, ScanStatus.VALIDATED, ScanStatus.RECONSTRUCTED], updated_at__lt=quiet)
            | Q(status__in=[ScanStatus.VALIDATING, ScanStatus.RECONSTRUCTING], claimed_at__lt=stale)
        )
        .order_by("pk")
        .values_list("pk", "status")
    )


# --------------------------------------------------------------------------- regions of interest and downloads


def _clean_geometry(geometry: dict) -> dict:
    shape = geometry.get("shape")
    if shape not in GEOMETRY_SIZE_KEYS:
        raise RuleViolation(
            "invalid_geometry",
            f"shape must be sphere, ellipsoid or box, got {shape!r}.",
            field="geometry",
            status_code=400,
        )
    key = GEOMETRY_SIZE_KEYS[shape]
    try:
        center = [float(v) for v in geometry["center_m"]]
        size = geometry[key]
        size = [float(size)] * 3 if isinstance(size, (int, float)) else [float(v) for v in size]
    except (KeyError, TypeError, ValueError):
        raise RuleViolation(
            "invalid_geometry",
            f"A {shape} needs center_m (3 numbers, m) and {key} "
            f"({'a number or ' if shape == 'sphere' else ''}3 numbers, m).",
            field="geometry",
            status_code=400,
        ) from None
    if len(center) != 3 or len(size) != 3 or min(size) <= 0 or max(abs(v) for v in center + size) > 1.0:
        raise RuleViolation(
            "invalid_geometry",
            f"center_m and {key} need 3 values in metres, sizes > 0 and all within 1 m of the scanner centre.",
            field="geometry",
            status_code=400,
        )
    return {"shape": shape, "center_m": center, key: size}


def roi_define(
    *,
    actor,
    subject: Subject,
    name: str,
    kind: str,
    geometry: dict | None = None,
    scan: Scan | None = None,
    label_volume=None,
    label_value: int | None = None,
) -> RegionOfInterest:
    """Define a region on a subject (all their scans) or on one scan (``scan`` given).

    ``label_volume``: an uploaded file (.npy int array or reconstruction-shaped MDF)."""
    if actor is not None:
        access.require_role(actor, site=subject.site, roles=ROI_ROLES, action="define regions of interest")
    if kind not in RoiKind.values:
        raise RuleViolation(
            "invalid_kind", f"kind must be one of {', '.join(RoiKind.values)}.", field="kind", status_code=400
        )
    if scan is not None and scan.subject_id != subject.pk:
        raise RuleViolation(
            "scan_of_other_subject", "The scan belongs to another subject.", field="scan", status_code=400
        )
    if (geometry is None) == (label_volume is None):
        raise RuleViolation(
            "geometry_or_labels", "Give either geometry or a label volume with its label value.", status_code=400
        )
    relative = ""
    if geometry is not None:
        geometry = _clean_geometry(geometry)
    else:
        relative = _store_label_volume(label_volume, label_value)
    try:
        with transaction.atomic():
            roi = RegionOfInterest(
                subject=subject,
                scan=scan,
                name=name,
                kind=kind,
                geometry=geometry,
                label_file=relative,
                label_value=label_value if relative else None,
                created_by=actor,
            )
            roi.full_clean(validate_constraints=False)
            roi.save()
            record_event(
                actor=actor,
                action=AuditAction.ROI_DEFINED,
                object_type="imaging.regionofinterest",
                object_id=roi.pk,
                trial_id=subject.trial_id,
                site_id=subject.site_id,
                subject_id=subject.pk,
                changes={
                    "name": [None, name],
                    "kind": [None, kind],
                    "geometry": [None, geometry],
                    "scan": [None, scan.pk if scan else None],
                    "label_value": [None, roi.label_value],
                },
            )
    except IntegrityError:
        if relative:
            uploads.remove(relative)
        raise RuleViolation(
            "duplicate_roi",
            f"A region named {name!r} already exists for this {'scan' if scan else 'subject'}.",
            field="name",
        ) from None
    except BaseException:
        if relative:
            uploads.remove(relative)
        raise
    return roi


def _store_label_volume(upload_file, label_value) -> str:
    if label_value is None or int(label_value) <= 0:
        raise RuleViolation(
            "label_value_required",
            "A label volume needs label_value (a positive integer).",
            field="label_value",
            status_code=400,
        )
    suffix = ".npy" if upload_file.name.lower().endswith(".npy") else ".mdf"
    relative = f"imaging/label_volumes/{uuid.uuid4().hex}{suffix}"
    path = uploads.media_path(relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for chunk in upload_file.chunks():
            fh.write(chunk)
    try:
        labels = processing.load_labels(str(path))
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if not (labels == int(label_value)).any():
            raise ValueError(f"label {label_value} marks no voxel of the volume")
    except Exception as exc:  # noqa: BLE001 - h5py and numpy raise many types: any unreadable file is refused alike
        uploads.remove(relative)
        raise RuleViolation(
            "invalid_label_volume", f"The label volume cannot be used: {exc}", field="label_volume", status_code=400
        ) from None
    return relative


# Raw files may carry identifying acquisition metadata: not for sponsors (they get de-identified exports).
DOWNLOAD_ROLES = frozenset({Role.COORDINATOR, Role.IMAGING_STAFF, Role.INVESTIGATOR, Role.MONITOR, Role.AUDITOR})


def file_download_record(*, actor, scan: Scan, which: str, path: str) -> None:
    access.require_role(actor, site=scan.subject.site, roles=DOWNLOAD_ROLES, action="download scan files")
    with transaction.atomic():
        _audit_scan(
            actor=actor,
            action=AuditAction.FILE_DOWNLOADED,
            scan=scan,
            changes={"file": [None, which], "path": [None, path]},
        )
