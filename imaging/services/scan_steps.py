"""The scan pipeline's steps the tasks call: validate, reconstruct, quantify."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from audit.actions import AuditAction
from config.errors import RuleViolation
from imaging import processing, uploads
from imaging.models import (
    Alert,
    Measurement,
    Reconstruction,
    Scan,
    ScanStatus,
)
from imaging.selectors import injected_iron_ng
from imaging.services._common import _audit_scan
from imaging.services.rois import rois_for
from imaging.services.scan_claims import _finish, scan_claim, scan_fail_unclaimed, scan_set_progress
from imaging.services.scan_uploads import assert_imaging_consent
from imaging.services.scanners import match_system_matrix
from recon.params import ReconParams

# What a step calls, in the transaction that records its success, with the scan moved on:
# the caller's ``then`` (the tasks record the next step there; services queue nothing).
Then = Callable[[Scan], None] | None


def scan_validate(*, scan_id: int, token: str, then: Then = None) -> Scan | None:
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
        elif (
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
            and then is not None
        ):
            then(scan)
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


def scan_reconstruct(
    *, scan_id: int, token: str, cache=None, params: ReconParams | None = None, then: Then = None
) -> Scan | None:
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
        if then is not None:
            then(scan)
    return scan


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
