"""Reads of imaging data, always scoped to the asking user's sites.

Lists are shaped for the API (select_related / prefetch) so a page costs the same
number of queries whatever its size.
"""

from __future__ import annotations

from django.db.models import Prefetch, Q, QuerySet

from config.errors import RuleViolation
from imaging.models import Alert, DicomSend, Measurement, RegionOfInterest, Scan, Scanner, SystemMatrix, Upload
from trials.models import Injection, Subject
from trials.permissions.access import visible_site_ids
from trials.selectors import sponsor_limited


def scanners_visible_to(user) -> QuerySet[Scanner]:
    return Scanner.objects.filter(site_id__in=visible_site_ids(user)).select_related("site")


def system_matrices_visible_to(user) -> QuerySet[SystemMatrix]:
    return SystemMatrix.objects.filter(scanner__site_id__in=visible_site_ids(user)).select_related(
        "scanner", "nanoparticle_lot"
    )


def uploads_visible_to(user) -> QuerySet[Upload]:
    """Scan and calibration uploads of the user's sites (a scan upload's scanner is at its
    subject's site). A sponsor sees no calibration upload: none has a subject sharing data."""
    return Upload.objects.filter(
        Q(scanner__site_id__in=visible_site_ids(user)), sponsor_limited(user, trial="scanner__site__trial_id")
    ).select_related("scanner__site", "subject__site", "subject__trial")


def scans_visible_to(user) -> QuerySet[Scan]:
    return (
        Scan.objects.filter(Q(subject__site_id__in=visible_site_ids(user)), sponsor_limited(user))
        .select_related("subject__site", "subject__trial", "scanner", "system_matrix")
        .prefetch_related(Prefetch("measurements", queryset=Measurement.objects.order_by("roi_kind", "roi_name", "id")))
    )


def measurements_visible_to(user) -> QuerySet[Measurement]:
    return Measurement.objects.filter(
        Q(scan__subject__site_id__in=visible_site_ids(user)), sponsor_limited(user, "scan__subject")
    ).select_related("scan")


def rois_visible_to(user) -> QuerySet[RegionOfInterest]:
    return RegionOfInterest.objects.filter(
        Q(subject__site_id__in=visible_site_ids(user)), sponsor_limited(user)
    ).select_related("subject")


def alerts_visible_to(user) -> QuerySet[Alert]:
    return Alert.objects.filter(Q(subject__site_id__in=visible_site_ids(user)), sponsor_limited(user)).select_related(
        "subject", "scan"
    )


def dicom_sends_visible_to(user) -> QuerySet[DicomSend]:
    return DicomSend.objects.filter(
        Q(scan__subject__site_id__in=visible_site_ids(user)), sponsor_limited(user, "scan__subject")
    ).select_related("destination", "requested_by", "scan")


def injected_iron_ng(injection: Injection) -> float:
    """Administered cells x pg Fe per cell of the labelled batch, in ng (DOMAIN §2)."""
    pg = injection.batch.iron_per_cell_pg
    if pg is None:
        raise RuleViolation("batch_not_labelled", f"Batch {injection.batch.batch_code} has no iron per cell.")
    return float(injection.administered_cells) * float(pg) / 1000.0


def time_course(subject: Subject) -> dict:
    """The subject's quantified scans as plot-ready series, one per ROI, by time point:
    the stored Measurement values, each relative to its scan's own injection.
    ``injected_iron_ng`` is the subject's first injection (kept for API clients); no
    number of a point is derived from it."""
    measurements = (
        Measurement.objects.filter(scan__subject=subject, scan__status=Scan.Status.QUANTIFIED)
        .select_related("scan", "reconstruction")
        .order_by("roi_kind", "roi_name", "scan__hours_after_injection", "scan_id")
    )
    series: dict[tuple[str, str], list] = {}
    latest: dict[int, int] = {}
    rows = list(measurements)
    for m in rows:  # only the newest reconstruction of each scan counts
        latest[m.scan_id] = max(latest.get(m.scan_id, 0), m.reconstruction.attempt)
    for m in rows:
        if m.reconstruction.attempt != latest[m.scan_id]:
            continue
        series.setdefault((m.roi_kind, m.roi_name), []).append(
            {
                "hours": m.scan.hours_after_injection,
                "iron_ng": m.iron_ng,
                "uncertainty_ng": m.uncertainty_ng,
                "retention_percent": m.retention_percent,
                "retention_uncertainty_percent": m.retention_uncertainty_percent,
                "off_target_percent": m.off_target_percent,
                "detected": m.detected,
                "scan_id": m.scan_id,
            }
        )
    injection = subject.injections.select_related("batch").order_by("administered_at").first()
    return {
        "subject": subject.pk,
        "subject_code": subject.code,
        "injected_iron_ng": injected_iron_ng(injection) if injection is not None else None,
        "series": [{"roi_kind": kind, "roi_name": name, "points": points} for (kind, name), points in series.items()],
    }
