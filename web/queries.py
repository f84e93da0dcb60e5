"""Reads the pages need, built only on the site-scoped selectors of trials, imaging
and compliance: nothing here widens what a user may see.

Every list is shaped so that a page costs the same number of queries whatever the
number of rows (annotations and select_related, never a query per row).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import defaultdict

from django.contrib.auth import get_user_model
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from compliance.models import Signature
from compliance.selectors import audit_trial_ids, signatures_visible_to
from config.ids import parse_id
from imaging.models import Reconstruction, Scan
from imaging.selectors import alerts_visible_to, scans_visible_to
from trials.models import LotQcStatus, Role, Subject, SubjectStatus
from trials.permissions import access
from trials.selectors import (
    consents_visible_to,
    injections_visible_to,
    lots_visible_to,
    memberships_of,
    subjects_visible_to,
    visible_sites,
    visible_trials,
)

# A lot that expires within this many days shows on the dashboard.
LOT_EXPIRY_WARNING_DAYS = 30
DASHBOARD_ALERT_ROWS = 8
PROBLEM_STATUSES = (Scan.Status.FAILED, Scan.Status.REJECTED)
FINAL_STATUSES = (Scan.Status.QUANTIFIED, Scan.Status.REJECTED, Scan.Status.FAILED)


# --------------------------------------------------------------------------- who am I


def roles_of(user) -> dict:
    """The user's roles, as flags the navigation and the page buttons use."""
    memberships = list(memberships_of(user))
    roles = {m.role for m in memberships}
    return {
        "memberships": memberships,
        "roles": roles,
        "coordinator": Role.COORDINATOR in roles,
        "imaging": Role.IMAGING_STAFF in roles,
        "investigator": Role.INVESTIGATOR in roles,
        "auditor": bool(roles & {Role.AUDITOR, Role.MONITOR}),
        "sponsor": Role.SPONSOR in roles,
        "trial_manager": Role.TRIAL_MANAGER in roles,
        "site_member": any(m.site_id for m in memberships),
    }


def sites_where(user, roles) -> QuerySet:
    """Sites where ``user`` holds one of ``roles`` (site memberships only)."""
    ids = access.active_memberships(user).filter(site__isnull=False, role__in=[str(r) for r in roles]).values("site_id")
    return visible_sites(user).filter(id__in=ids)


def trials_where_trial_wide(user, roles) -> QuerySet:
    """Trials where ``user`` holds one of ``roles`` trial-wide (no site)."""
    ids = access.active_memberships(user).filter(site__isnull=True, role__in=[str(r) for r in roles]).values("trial_id")
    return visible_trials(user).filter(id__in=ids)


def clinical_staff(site) -> QuerySet:
    """Coordinators and investigators of ``site``: who may give or verify a dose there."""
    User = get_user_model()
    return (
        User.objects.filter(
            is_active=True,
            trial_memberships__site=site,
            trial_memberships__active=True,
            trial_memberships__role__in=[str(r) for r in access.CLINICAL_ROLES],
        )
        .distinct()
        .order_by("username")
    )


# --------------------------------------------------------------------------- dashboard


def dashboard(user) -> dict:
    today = timezone.localdate()
    sites = list(
        visible_sites(user)
        .annotate(
            screening=Count("subjects", filter=Q(subjects__status=SubjectStatus.SCREENING)),
            enrolled=Count("subjects", filter=Q(subjects__status=SubjectStatus.ENROLLED)),
            completed=Count("subjects", filter=Q(subjects__status=SubjectStatus.COMPLETED)),
            withdrawn=Count("subjects", filter=Q(subjects__status=SubjectStatus.WITHDRAWN)),
            total=Count("subjects"),
        )
        .order_by("trial__protocol_number", "code")
    )
    scans = scans_visible_to(user).prefetch_related(None)
    by_status = dict(scans.order_by().values_list("status").annotate(n=Count("id")))
    scan_counts = [(value, label, by_status.get(value, 0)) for value, label in Scan.Status.choices]
    problem_scans = list(scans.filter(status__in=PROBLEM_STATUSES).order_by("-updated_at")[:DASHBOARD_ALERT_ROWS])
    off_target = list(
        alerts_visible_to(user).select_related("subject__trial").order_by("-created_at")[:DASHBOARD_ALERT_ROWS]
    )
    expiring = list(
        lots_visible_to(user)
        .exclude(qc_status=LotQcStatus.REJECTED)
        .filter(expiry_date__lte=today + dt.timedelta(days=LOT_EXPIRY_WARNING_DAYS))
        .order_by("expiry_date")[:DASHBOARD_ALERT_ROWS]
    )
    withdrawn = list(
        consents_visible_to(user).filter(withdrawn_at__isnull=False).order_by("-withdrawn_at")[:DASHBOARD_ALERT_ROWS]
    )
    return {
        "sites": sites,
        "totals": {
            "subjects": sum(s.total for s in sites),
            "injections": injections_visible_to(user).count(),
            "scans": sum(by_status.values()),
        },
        "scan_counts": scan_counts,
        "problem_scans": problem_scans,
        "off_target_alerts": off_target,
        "expiring_lots": expiring,
        "withdrawn_consents": withdrawn,
        "today": today,
        "audit_trials": audit_trial_ids(user),
    }


def sponsor_dashboard(user) -> dict:
    """The sponsor's dashboard: counts over the subjects they may read (data-sharing
    consent in force, as the selectors give them), sites by opaque code, no subject rows."""
    from compliance.sponsor import Keys

    keys = Keys()
    sites = list(visible_sites(user).order_by("trial__protocol_number", "code"))
    subjects = dict(subjects_visible_to(user).order_by().values_list("site_id").annotate(n=Count("id")))
    scans = scans_visible_to(user).prefetch_related(None)
    by_status = dict(scans.order_by().values_list("status").annotate(n=Count("id")))
    return {
        "sites": [
            {"trial": s.trial.protocol_number, "code": keys.site(s), "subjects": subjects.get(s.pk, 0)} for s in sites
        ],
        "totals": {
            "subjects": sum(subjects.values()),
            "injections": injections_visible_to(user).count(),
            "scans": sum(by_status.values()),
        },
        "scan_counts": [(value, label, by_status.get(value, 0)) for value, label in Scan.Status.choices],
    }


# --------------------------------------------------------------------------- subjects


def subject_rows(user, *, search: str = "", site: str = "", status: str = "") -> QuerySet[Subject]:
    """The subject list with its per-row numbers as annotations (constant query count)."""
    subjects = subjects_visible_to(user)
    if search:
        subjects = subjects.filter(code__icontains=search.strip())
    if (site_id := parse_id(site)) is not None:
        subjects = subjects.filter(site_id=site_id)
    if status in SubjectStatus.values:
        subjects = subjects.filter(status=status)
    latest_scan = Scan.objects.filter(subject=OuterRef("pk")).order_by("-created_at", "-id")
    count_of = lambda qs: Coalesce(  # noqa: E731
        Subquery(
            qs.order_by().values("subject").annotate(n=Count("id")).values("n"),
            output_field=IntegerField(),
        ),
        0,
    )
    from trials.models import Injection

    return subjects.annotate(
        injection_count=count_of(Injection.objects.filter(subject=OuterRef("pk"))),
        scan_count=count_of(Scan.objects.filter(subject=OuterRef("pk"))),
        last_scan_status=Subquery(latest_scan.values("status")[:1]),
        last_scan_hours=Subquery(latest_scan.values("hours_after_injection")[:1]),
    ).order_by("code")


def subject_timeline(user, subject: Subject) -> dict:
    """Everything the timeline shows, in a fixed number of queries."""
    consents = list(consents_visible_to(user).filter(subject=subject).order_by("signed_at", "id"))
    injections = list(
        injections_visible_to(user)
        .filter(subject=subject)
        .select_related("batch__nanoparticle_lot", "batch__donor_subject")
        .order_by("administered_at", "id")
    )
    scans = list(scans_visible_to(user).filter(subject=subject).order_by("hours_after_injection", "id"))
    signatures = list(signatures_visible_to(user).filter(subject_id=subject.pk).order_by("signed_at", "id"))
    reconstruction_scan = dict(Reconstruction.objects.filter(scan__subject=subject).values_list("pk", "scan_id"))
    by_scan: dict[int | None, list[Signature]] = defaultdict(list)
    subject_signatures = []
    for signature in signatures:
        if signature.content_type.model == "reconstruction":
            by_scan[reconstruction_scan.get(int(signature.object_id))].append(signature)
        else:
            subject_signatures.append(signature)
    scans_by_injection: dict[int, list[Scan]] = defaultdict(list)
    for scan in scans:
        scan.signature_list = by_scan.get(scan.pk, [])  # type: ignore[attr-defined]  # for the template
        scans_by_injection[scan.injection_id].append(scan)
    for injection in injections:
        injection.scan_list = scans_by_injection.get(injection.pk, [])  # type: ignore[attr-defined]  # for the template
    alerts = list(alerts_visible_to(user).filter(subject=subject).order_by("-created_at"))
    return {
        "consents": consents,
        "injections": injections,
        "scans": scans,
        "subject_signatures": subject_signatures,
        "alerts": alerts,
    }


def reconstruction_of(scan: Scan) -> Reconstruction | None:
    """The newest reconstruction: the one whose numbers count."""
    return scan.reconstructions.select_related("system_matrix").order_by("-attempt").first()


# --------------------------------------------------------------------------- scans


def scan_rows(user, *, search: str = "", site: str = "", status: str = "", hours: str = "") -> QuerySet[Scan]:
    """The scan list: one query for the page whatever its length (no per-row lookups)."""
    scans = scans_visible_to(user).prefetch_related(None).select_related("injection__batch")
    if search:
        scans = scans.filter(subject__code__icontains=search.strip())
    if (site_id := parse_id(site)) is not None:
        scans = scans.filter(subject__site_id=site_id)
    if status in Scan.Status.values:
        scans = scans.filter(status=status)
    with contextlib.suppress(ValueError):
        scans = scans.filter(hours_after_injection=float(hours)) if hours else scans
    return scans.order_by("-created_at", "-id")


def scan_time_points(user) -> list[float]:
    """The time points (hours after injection) the user's scans were taken at."""
    return list(
        scans_visible_to(user)
        .prefetch_related(None)
        .order_by("hours_after_injection")
        .values_list("hours_after_injection", flat=True)
        .distinct()
    )
