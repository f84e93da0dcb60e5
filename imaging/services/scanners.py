"""Scanners and the system-matrix library: registration, retirement, matching a scan to its matrix."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.chain import record_event
from config.errors import RuleViolation
from config.reasons import require_reason
from imaging import processing, uploads
from imaging.models import (
    Scanner,
    SystemMatrix,
    Upload,
)
from trials.models import Injection, NanoparticleLot, Role, Site
from trials.permissions import access

# Who retires a calibration of their site's library.
LIBRARY_ROLES = frozenset({Role.COORDINATOR, Role.IMAGING_STAFF})
# Who adds one: registering a calibration file is the imaging staff's technical work.
REGISTER_ROLES = frozenset({Role.IMAGING_STAFF})


# Drive amplitudes of a scan and a calibration may differ by this much (relative).
AMPLITUDE_TOLERANCE = 0.02


BASE_FREQUENCY_TOLERANCE = 1e-6


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


def simulated_scanner_register(*, actor, site: Site, name: str, model) -> Scanner:
    """A scanner with the drive field of ``recon.simulate``'s scanner ``model`` (a
    ``scanner_preset``): the demo's and the benchmarks' simulated 2D scanner."""
    return scanner_register(
        actor=actor,
        site=site,
        name=name,
        manufacturer="recon.simulate",
        model="2D FFP Lissajous",
        topology="FFP",
        base_frequency_hz=model.base_frequency_hz,
        dividers=list(model.dividers),
        drive_amplitudes_t=list(model.drive_amplitude_t),
        gradient_t_per_m=list(model.gradient_t_per_m),
    )


def _copy_into_storage(source: Path, relative: str) -> tuple[str, int]:
    target = uploads.media_path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return processing.sha256_file(target), target.stat().st_size


def system_matrix_register(
    *,
    actor,
    scanner: Scanner,
    name: str,
    tracer_product: str,
    source_path: str | Path,
    nanoparticle_lot=None,
    upload: Upload | None = None,
) -> SystemMatrix:
    """Copy a calibration MDF into the library, validate it with recon and record what it
    holds. ``upload``: the completed calibration upload the file came through (its declared
    sha256 must be the file's); refused, nothing is stored (no row, no file)."""
    if actor is not None:
        access.require_role(actor, site=scanner.site, roles=REGISTER_ROLES, action="register system matrices")
    name, tracer_product = (name or "").strip(), (tracer_product or "").strip()
    if not name:
        raise RuleViolation("name_required", "Give the calibration a name.", field="name")
    if not tracer_product:
        raise RuleViolation(
            "tracer_required",
            "Name the tracer product the calibration was measured with (as on its nanoparticle lots).",
            field="tracer_product",
        )
    if nanoparticle_lot is not None and nanoparticle_lot.trial_id != scanner.site.trial_id:
        raise RuleViolation(
            "lot_of_other_trial",
            "The nanoparticle lot belongs to another trial.",
            field="nanoparticle_lot",
        )
    if nanoparticle_lot is not None and nanoparticle_lot.product.strip().lower() != tracer_product.lower():
        raise RuleViolation(
            "lot_of_other_tracer",
            f"Lot {nanoparticle_lot.lot_number} is {nanoparticle_lot.product}, not {tracer_product}.",
            field="nanoparticle_lot",
        )
    source = Path(source_path)
    if not source.is_file():
        raise RuleViolation("file_missing", f"No calibration file at {source.name!r}.", field="file")
    relative = f"imaging/system_matrices/{uuid.uuid4().hex}.mdf"
    # Copying, hashing and validating are slow: done before the transaction, undone on refusal.
    sha256, size = _copy_into_storage(source, relative)
    stored = uploads.media_path(relative)
    try:
        if upload is not None and sha256 != upload.sha256:
            raise RuleViolation(
                "upload_sha256_mismatch",
                f"The uploaded file's sha256 {sha256[:12]}… is not the declared {upload.sha256[:12]}…: "
                "the bytes changed on the way; upload the file again.",
                field="upload",
            )
        inspection = processing.inspect(stored)
        if not inspection.valid:
            raise RuleViolation(
                "invalid_system_matrix",
                f"The calibration file is not valid: {inspection.problems_text}",
                field="file",
            )
        if inspection.kind != "calibration":
            raise RuleViolation(
                "not_a_calibration",
                f"The file is a {inspection.kind} MDF, not a calibration (a system matrix needs /calibration).",
                field="file",
            )
        summary = processing.calibration_summary(stored)
        if not summary["delta_concentration_mol_per_l"]:
            raise RuleViolation(
                "no_delta_concentration",
                "The calibration has no /tracer/concentration: the delta "
                "sample's concentration is needed to quantify iron.",
                field="file",
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
                upload=upload,
            )
            sm.full_clean(validate_unique=False)  # the database's unique constraints answer races below
            sm.save()
            record_event(
                actor=actor,
                action=AuditAction.SYSTEM_MATRIX_REGISTERED,
                object_type="imaging.systemmatrix",
                object_id=sm.pk,
                trial_id=scanner.site.trial_id,
                site_id=scanner.site_id,
                changes={
                    "name": [None, name],
                    "scanner": [None, scanner.pk],
                    "sha256": [None, sha256],
                    "tracer_product": [None, tracer_product],
                    "nanoparticle_lot": [None, sm.nanoparticle_lot_id],
                    "grid_size": [None, sm.grid_size],
                    "dividers": [None, sm.dividers],
                    "upload": [None, str(upload.pk) if upload is not None else None],
                },
            )
            if upload is not None:
                # The bytes are in the library now: the upload's copy goes once this commits.
                transaction.on_commit(lambda: uploads.remove(upload.path))
    except IntegrityError:
        uploads.remove(relative)
        raise RuleViolation(
            "duplicate_system_matrix",
            f"This calibration (sha256 {sha256[:12]}…) is already in the library of scanner {scanner.name}"
            + (" or its upload is already registered." if upload is not None else "."),
        ) from None
    except BaseException:
        uploads.remove(relative)
        raise
    return sm


def system_matrix_register_from_upload(
    *, actor, upload: Upload, scanner: Scanner, name: str, tracer_product: str, nanoparticle_lot=None
) -> SystemMatrix:
    """Register the file of a completed calibration upload (``POST /api/v1/system-matrices/``)
    in the library of the scanner it was uploaded for."""
    if actor is not None:
        access.require_role(actor, site=scanner.site, roles=REGISTER_ROLES, action="register system matrices")
    if upload.kind != Upload.Kind.CALIBRATION:
        raise RuleViolation(
            "not_a_calibration_upload",
            f"Upload {upload.pk} is a {upload.kind} upload: start the upload with kind calibration.",
            field="upload",
        )
    if upload.scanner_id != scanner.pk:
        raise RuleViolation(
            "upload_scanner_mismatch",
            f"Upload {upload.pk} was started for scanner #{upload.scanner_id}, not #{scanner.pk}: "
            "register it on that scanner, or upload the file again for this one.",
            field="scanner",
        )
    if upload.status == Upload.Status.TERMINATED:
        raise RuleViolation(
            "upload_terminated",
            f"Upload {upload.pk} is closed (its file was refused, or the upload abandoned): upload the file again.",
            field="upload",
        )
    if upload.status != Upload.Status.COMPLETED:
        raise RuleViolation(
            "upload_not_complete",
            f"Upload {upload.pk} is {upload.get_status_display().lower()} "
            f"({upload.offset} of {upload.length} bytes): finish it first.",
            field="upload",
        )
    registered = SystemMatrix.objects.filter(upload=upload).first()
    if registered is not None:
        raise RuleViolation(
            "upload_already_registered",
            f"Upload {upload.pk} is already registered as {registered.describe()}.",
            field="upload",
        )
    try:
        return system_matrix_register(
            actor=actor,
            scanner=scanner,
            name=name,
            tracer_product=tracer_product,
            source_path=uploads.media_path(upload.path),
            nanoparticle_lot=nanoparticle_lot,
            upload=upload,
        )
    except RuleViolation as exc:
        if exc.code in FILE_REFUSALS:
            _discard_upload(actor=actor, upload=upload, code=exc.code, message=exc.message)
        raise


# Refusals of the bytes themselves: the upload can never be registered on its scanner.
FILE_REFUSALS = frozenset(
    {
        "invalid_system_matrix",
        "not_a_calibration",
        "no_delta_concentration",
        "duplicate_system_matrix",
        "upload_sha256_mismatch",
    }
)


def _discard_upload(*, actor, upload: Upload, code: str, message: str) -> None:
    """A calibration upload whose file was refused is closed and its bytes removed; the
    refusal is itself part of the record (UPLOAD_REFUSED, with the code and the reason)."""
    site = upload.scanner.site
    with transaction.atomic():
        if not Upload.objects.filter(pk=upload.pk, status=Upload.Status.COMPLETED).update(
            status=Upload.Status.TERMINATED
        ):
            return
        record_event(
            actor=actor,
            action=AuditAction.UPLOAD_REFUSED,
            object_type="imaging.upload",
            object_id=upload.pk,
            trial_id=site.trial_id,
            site_id=site.pk,
            changes={"status": [Upload.Status.COMPLETED, Upload.Status.TERMINATED], "code": [None, code]},
            reason=message,
        )
        transaction.on_commit(lambda: uploads.remove(upload.path))
    upload.status = Upload.Status.TERMINATED


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


def _fits_tracer(sm: SystemMatrix, lot) -> bool:
    """Whether calibration ``sm`` was measured with ``lot``'s tracer (and, when it names
    one lot, with that lot)."""
    product = lot.product if lot is not None else ""
    return sm.tracer_product.strip().lower() == product.strip().lower() and (
        sm.nanoparticle_lot_id is None or (lot is not None and sm.nanoparticle_lot_id == lot.pk)
    )


def _candidates(scanner: Scanner, lot) -> list[SystemMatrix]:
    return [
        sm
        for sm in SystemMatrix.objects.filter(scanner=scanner, active=True).select_related("nanoparticle_lot")
        if _fits_tracer(sm, lot)
    ]


def _available(scanner: Scanner) -> str:
    active = list(SystemMatrix.objects.filter(scanner=scanner, active=True).select_related("nanoparticle_lot"))
    return "; ".join(sm.describe() for sm in active) or "none"


def tracers_without_calibration(site: Site, lots) -> list[NanoparticleLot]:
    """Those of ``lots`` (nanoparticle lots; None, an unlabelled batch's, is skipped) that
    no active calibration of any scanner of ``site`` fits: every scan upload of an injection
    labelled with one of them at the site would be refused (``no_system_matrix``). One query."""
    active = list(SystemMatrix.objects.filter(scanner__site=site, active=True))
    unique = {lot.pk: lot for lot in lots if lot is not None}
    return [lot for lot in unique.values() if not any(_fits_tracer(sm, lot) for sm in active)]


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
