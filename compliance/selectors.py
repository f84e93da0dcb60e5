"""Scoped reads of compliance data."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Min, QuerySet

from audit.actions import AuditAction
from audit.models import AuditEvent
from compliance.models import Signature
from config.ids import parse_id

if TYPE_CHECKING:
    from trials.models import Site


def audit_trial_ids(user) -> list[int]:
    """Trials whose audit trail ``user`` may browse: monitors and auditors, trial-wide."""
    from trials.models import Role
    from trials.permissions import access

    return list(
        access.active_memberships(user)
        .filter(site__isnull=True, role__in=[Role.MONITOR, Role.AUDITOR])
        .values_list("trial_id", flat=True)
    )


def audit_events_visible_to(
    user, *, subject=None, username=None, action=None, date_from=None, date_to=None
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(trial_id__in=audit_trial_ids(user))
    if subject:
        subject_id = parse_id(subject)
        events = (
            events.filter(subject_id=subject_id)
            if subject_id is not None
            else events.filter(subject_id__in=_subject_ids_by_code(subject))
        )
    if username:
        events = events.filter(actor_username=username)
    if action:
        value = parse_id(action) if str(action).isdigit() else getattr(AuditAction, str(action).upper(), None)
        events = events.filter(action=int(value)) if value is not None else events.none()
    if date_from:
        events = events.filter(occurred_at__date__gte=date_from)
    if date_to:
        events = events.filter(occurred_at__date__lte=date_to)
    return events.order_by("-sequence")


def _subject_ids_by_code(code: str):
    from trials.models import Subject

    return Subject.objects.filter(code=code).values("id")


def parse_date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def signatures_visible_to(user) -> QuerySet[Signature]:
    from trials.permissions.access import sponsor_trial_ids, visible_site_ids

    # Signatures name staff and carry exact dates: not part of a sponsor's de-identified view.
    return (
        Signature.objects.filter(site_id__in=visible_site_ids(user))
        .exclude(trial_id__in=sponsor_trial_ids(user))
        .select_related("content_type", "signer")
    )


# --------------------------------------------------------------------------- awaiting signature


@dataclass(frozen=True)
class AwaitingSignature:
    """A record an investigator is asked to sign: a subject's visit record once a dose is
    recorded, a quantified scan's results (its newest reconstruction). ``scan_id`` is None
    for a visit record."""

    subject_id: int
    subject_code: str
    site_code: str
    scan_id: int | None
    hours_after_injection: float | None
    due_since: dt.datetime
    invalidated_at: dt.datetime | None = None
    invalidation_reason: str = ""
    site: Site | None = None  # whose clock the page shows the times on

    @property
    def what(self) -> str:
        if self.scan_id is None:
            return f"Visit record of subject {self.subject_code}"
        return f"Results of scan #{self.scan_id} ({self.hours_after_injection:g} h after injection)"


def investigator_site_ids(user) -> list[int]:
    """Sites whose records ``user`` signs: their investigator memberships, in sites they can read."""
    from trials.models import Role
    from trials.permissions import access

    return list(
        access.active_memberships(user)
        .filter(site__isnull=False, role=Role.INVESTIGATOR, site_id__in=access.visible_site_ids(user))
        .values_list("site_id", flat=True)
    )


def _signature_state(model, object_ids: list[int]) -> tuple[set[str], dict[str, Signature]]:
    """(ids with a valid signature, the latest invalidated signature of each id)."""
    from django.contrib.contenttypes.models import ContentType

    rows = Signature.objects.filter(
        content_type=ContentType.objects.get_for_model(model), object_id__in=[str(i) for i in object_ids]
    ).order_by("signed_at", "id")
    valid: set[str] = set()
    invalidated: dict[str, Signature] = {}
    for signature in rows:
        if signature.valid:
            valid.add(signature.object_id)
        else:
            invalidated[signature.object_id] = signature
    return valid, invalidated


def awaiting_signature(user) -> list[AwaitingSignature]:
    """Records at the sites where ``user`` is an investigator whose signature is required
    and missing or invalidated (no valid signature on it now), oldest first. A signature
    that a change made invalid was marked so by the service that changed the record
    (``audit.chain.record_change``), so reading the stored flag is enough: nothing is
    written here."""
    from imaging.models import Reconstruction, Scan
    from trials.models import Subject

    site_ids = investigator_site_ids(user)
    if not site_ids:
        return []
    subjects = list(
        Subject.objects.filter(site_id__in=site_ids)
        .annotate(first_dose=Min("injections__administered_at"))
        .filter(first_dose__isnull=False)
        .select_related("site")
    )
    reconstructions: dict[int, Reconstruction] = {}
    for reconstruction in (
        Reconstruction.objects.filter(scan__subject__site_id__in=site_ids, scan__status=Scan.Status.QUANTIFIED)
        .select_related("scan__subject__site")
        .order_by("scan_id", "-attempt")
    ):
        reconstructions.setdefault(reconstruction.scan_id, reconstruction)  # the newest: the one whose numbers count

    items: list[AwaitingSignature] = []
    valid, invalidated = _signature_state(Subject, [s.pk for s in subjects])
    for subject in subjects:
        key = str(subject.pk)
        if key not in valid:
            stale = invalidated.get(key)
            items.append(
                AwaitingSignature(
                    subject_id=subject.pk,
                    subject_code=subject.code,
                    site_code=subject.site.code,
                    scan_id=None,
                    hours_after_injection=None,
                    due_since=subject.first_dose,  # the annotation above
                    invalidated_at=stale.invalidated_at if stale else None,
                    invalidation_reason=stale.invalidation_reason if stale else "",
                    site=subject.site,
                )
            )
    valid, invalidated = _signature_state(Reconstruction, [r.pk for r in reconstructions.values()])
    for reconstruction in reconstructions.values():
        key = str(reconstruction.pk)
        if key not in valid:
            stale = invalidated.get(key)
            scan = reconstruction.scan
            items.append(
                AwaitingSignature(
                    subject_id=scan.subject_id,
                    subject_code=scan.subject.code,
                    site_code=scan.subject.site.code,
                    scan_id=scan.pk,
                    hours_after_injection=scan.hours_after_injection,
                    due_since=reconstruction.created_at,
                    invalidated_at=stale.invalidated_at if stale else None,
                    invalidation_reason=stale.invalidation_reason if stale else "",
                    site=scan.subject.site,
                )
            )
    items.sort(key=lambda i: (i.due_since, i.subject_code, i.scan_id or 0))
    return items
