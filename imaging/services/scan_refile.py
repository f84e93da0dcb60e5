"""Re-filing a scan uploaded against the wrong subject or time point.

The file, its bytes and its hash never change; what changes is whom and when it is filed
under. The rules: imaging staff or a coordinator of the scan's site, a reason, a target
subject of the same site (the scanner and the file stay there) who has not withdrawn, an
injection of that subject, the imaging consent the new time point needs in force, no
other scan of the same bytes for that subject, and no worker holding the scan now.

What follows from it, in the same transaction:

- the audit event keeps the old and the new subject, injection and time point;
- every signature on the scan's reconstructions is invalidated (the signer vouched for
  results of another subject or time point: ``audit.chain.record_context_change``);
- when the injection changes, the results depend on it (injected iron, iron per cell,
  the tracer's calibration), so the scan goes back to ``received`` and runs through the
  pipeline again (``then`` records its next task); earlier reconstructions and
  measurements are kept as attempts; the scan's off-target alerts, computed from the
  old injection, are withdrawn (their values stay in the audit trail) and raised again
  by the new quantification if the new numbers call for it;
- regions drawn on this scan follow it to the new subject.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import IntegrityError, transaction

from audit.actions import AuditAction
from audit.chain import record_context_change
from config.errors import RuleViolation
from config.reasons import require_reason
from imaging.models import Alert, RegionOfInterest, Scan, ScanStatus
from imaging.services._common import _audit_scan
from imaging.services.scan_uploads import UPLOAD_ROLES, assert_imaging_consent
from imaging.services.scanners import require_system_matrix_for_tracer
from trials.models import Injection, Subject
from trials.permissions import access

REFILE_ROLES = UPLOAD_ROLES

# A worker holds a scan in these: re-filing waits until the step has finished.
_BUSY = frozenset({ScanStatus.VALIDATING, ScanStatus.RECONSTRUCTING})


def scan_refile(
    *,
    actor,
    scan: Scan,
    subject: Subject,
    injection_id: int,
    hours_after_injection: float,
    reason: str,
    then: Callable[[Scan], None] | None = None,
) -> Scan:
    """File ``scan`` under ``subject``'s injection ``injection_id`` at ``hours_after_injection``."""
    access.require_role(actor, site=scan.subject.site, roles=REFILE_ROLES, action="re-file scans")
    reason = require_reason(reason)
    if subject.site_id != scan.subject.site_id:
        raise RuleViolation(
            "refile_cross_site",
            f"Subject {subject.code} is at site {subject.site.code}, the scan at site {scan.subject.site.code}: "
            "a scan is re-filed within its own site only (upload it at the other site instead).",
            field="subject",
        )
    if subject.status == Subject.Status.WITHDRAWN:
        raise RuleViolation(
            "subject_withdrawn", f"Subject {subject.code} has withdrawn from the trial: no new scans.", field="subject"
        )
    if hours_after_injection < 0:
        raise RuleViolation("invalid_time_point", "The time point cannot be before the injection.", field="hours")
    injection = (
        Injection.objects.select_related("batch__nanoparticle_lot").filter(pk=injection_id, subject=subject).first()
    )
    if injection is None:
        raise RuleViolation(
            "injection_not_found",
            f"Injection #{injection_id} is not an injection of subject {subject.code}.",
            field="injection",
        )
    before = {
        "subject": scan.subject_id,
        "injection": scan.injection_id,
        "hours_after_injection": scan.hours_after_injection,
    }
    after = {"subject": subject.pk, "injection": injection.pk, "hours_after_injection": float(hours_after_injection)}
    if before == after:
        raise RuleViolation("no_change", "The scan is already filed under this subject, injection and time point.")
    injection_changes = before["injection"] != after["injection"]
    assert_imaging_consent(
        subject, injection=injection, hours_after_injection=after["hours_after_injection"], scan=scan
    )
    if injection_changes:
        require_system_matrix_for_tracer(scan.scanner, injection)
    duplicate = (
        Scan.objects.filter(subject=subject, sha256=scan.sha256)
        .exclude(pk=scan.pk)
        .exclude(status=ScanStatus.REJECTED)
        .first()
    )
    if duplicate is not None:
        raise RuleViolation(
            "duplicate_scan",
            f"Subject {subject.code} already has this file as scan #{duplicate.pk} ({duplicate.status}).",
            field="subject",
        )
    old_subject = scan.subject
    try:
        with transaction.atomic():
            locked = Scan.objects.select_for_update().get(pk=scan.pk)
            if locked.status in _BUSY:
                raise RuleViolation(
                    "scan_busy",
                    f"Scan #{scan.pk} is being processed ({locked.status}): re-file it when this step has finished.",
                )
            if (locked.subject_id, locked.injection_id, locked.hours_after_injection) != tuple(before.values()):
                raise RuleViolation("scan_changed", f"Scan #{scan.pk} was re-filed meanwhile: reload and check it.")
            # The signatures go first, recorded under the subject whose results were signed.
            for reconstruction in locked.reconstructions.select_related("scan__subject").order_by("id"):
                record_context_change(reconstruction, actor=actor, reason=reason)
            changes: dict = {name: [before[name], after[name]] for name in before if before[name] != after[name]}
            changes["subject_code"] = [old_subject.code, subject.code]
            fields: dict = dict(
                subject=subject, injection=injection, hours_after_injection=after["hours_after_injection"]
            )
            if injection_changes and locked.status != ScanStatus.RECEIVED:
                alerts = list(Alert.objects.filter(scan=locked).values("kind", "value_percent", "threshold_percent"))
                if alerts:
                    changes["alerts_withdrawn"] = [alerts, []]
                    Alert.objects.filter(scan=locked).delete()
                changes["status"] = [locked.status, ScanStatus.RECEIVED]
                fields.update(
                    status=ScanStatus.RECEIVED,
                    status_reason="",
                    retryable=False,
                    system_matrix=None,
                    metrics_summary=None,
                    progress_stage="",
                    progress_percent=0.0,
                    claim_token="",
                    claimed_at=None,
                )
            moved_rois = RegionOfInterest.objects.filter(scan=locked).exclude(subject=subject)
            if moved_rois.exists():
                changes["rois_moved"] = [None, sorted(moved_rois.values_list("pk", flat=True))]
                moved_rois.update(subject=subject)
            for name, value in fields.items():
                setattr(locked, name, value)
            locked.full_clean(validate_unique=False)
            locked.save(update_fields=[*fields, "updated_at"])
            _audit_scan(actor=actor, action=AuditAction.SCAN_REFILED, scan=locked, changes=changes, reason=reason)
            if injection_changes and then is not None:
                then(locked)
    except IntegrityError:
        raise RuleViolation(
            "duplicate_scan", f"Subject {subject.code} already has this file as another scan.", field="subject"
        ) from None
    return locked
