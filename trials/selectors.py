"""Reads of trial data, always scoped to what the asking user may see.

Every query that returns trial data goes through a function here. Lists are shaped
for the API (select_related / annotations) so a page costs the same number of queries
whatever its size.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from trials.models import (
    CellBatch,
    Consent,
    ConsentDocument,
    ConsentScope,
    Injection,
    Membership,
    NanoparticleLot,
    Site,
    Subject,
    Trial,
)
from trials.permissions.access import active_memberships, sponsor_trial_ids, visible_site_ids, visible_trial_ids


def subjects_sharing_data() -> QuerySet:
    """Ids of the subjects whose data-sharing consent is in force now: the governing
    consent (the latest signed by now) grants ``data_sharing`` and that scope is not
    withdrawn. The same answer as ``consent_allows(subject, "data_sharing")`` (withdrawals
    are never dated in the future), as one subquery: the sponsor data set and every read
    of a sponsor are limited to these subjects."""
    governing = (Consent.objects.filter(subject=OuterRef("pk"), signed_at__lte=Now())
                 .order_by("-signed_at", "-id").values("id")[:1])
    sharing = Consent.objects.filter(scope_data_sharing=True).exclude(
        withdrawn_scopes__has_key=ConsentScope.DATA_SHARING.value)
    return Subject.objects.annotate(governing_consent=Subquery(governing)).filter(
        governing_consent__in=sharing.values("id")).values("id")


def sponsor_limited(user, subject: str = "subject", *, nullable: bool = False, trial: str | None = None) -> Q:
    """Rows reached from their subject through ``subject`` (a lookup path), limited for a
    sponsor to subjects sharing data; other roles' rows are untouched. ``nullable``: a
    row without a subject (an allogeneic batch) stays; ``trial``: the row's own trial
    lookup when it has one."""
    prefix = f"{subject}__" if subject else ""
    keep = Q(**{f"{prefix}id__in": subjects_sharing_data()})
    if nullable:
        keep |= Q(**{f"{subject}__isnull": True})
    trial = trial or f"{prefix}trial_id"
    return ~Q(**{f"{trial}__in": sponsor_trial_ids(user)}) | keep


def visible_trials(user) -> QuerySet[Trial]:
    return Trial.objects.filter(id__in=visible_trial_ids(user))


def visible_sites(user) -> QuerySet[Site]:
    return Site.objects.filter(id__in=visible_site_ids(user)).select_related("trial")


def memberships_of(user) -> QuerySet[Membership]:
    return active_memberships(user).select_related("trial", "site")


def subjects_visible_to(user) -> QuerySet[Subject]:
    return Subject.objects.filter(Q(site_id__in=visible_site_ids(user)), sponsor_limited(user, "")).select_related(
        "site", "trial")


def consent_documents_visible_to(user) -> QuerySet[ConsentDocument]:
    return ConsentDocument.objects.filter(trial_id__in=visible_trial_ids(user)).select_related("trial")


def consents_visible_to(user) -> QuerySet[Consent]:
    return Consent.objects.filter(Q(subject__site_id__in=visible_site_ids(user)), sponsor_limited(user)).select_related(
        "subject", "subject__site", "document", "obtained_by"
    )


def lots_visible_to(user) -> QuerySet[NanoparticleLot]:
    return NanoparticleLot.objects.filter(trial_id__in=visible_trial_ids(user)).select_related("trial")


def _injected_cells(batch_ref) -> Subquery:
    # A correlated subquery, not a join + GROUP BY, so it composes with any filter.
    total = (
        Injection.objects.filter(batch_id=batch_ref)
        .order_by()
        .values("batch_id")
        .annotate(total=Sum("administered_cells"))
        .values("total")
    )
    return Subquery(total)


def with_cells_remaining(batches: QuerySet[CellBatch]) -> QuerySet[CellBatch]:
    return batches.annotate(
        cells_injected=Coalesce(_injected_cells(OuterRef("pk")), Value(0)),
        cells_remaining=F("cell_count") - Coalesce(_injected_cells(OuterRef("pk")), Value(0)),
    )


def batches_visible_to(user) -> QuerySet[CellBatch]:
    batches = CellBatch.objects.filter(Q(site_id__in=visible_site_ids(user)),
                                       sponsor_limited(user, "donor_subject", nullable=True,
                                                       trial="trial_id")).select_related(
        "site", "trial", "nanoparticle_lot", "donor_subject"
    )
    return with_cells_remaining(batches)


def batch_cells_remaining(batch: CellBatch) -> int:
    injected = Injection.objects.filter(batch=batch).aggregate(total=Sum("administered_cells"))["total"] or 0
    return batch.cell_count - injected


def injections_visible_to(user) -> QuerySet[Injection]:
    return Injection.objects.filter(Q(subject__site_id__in=visible_site_ids(user)),
                                    sponsor_limited(user)).select_related(
        "subject", "subject__site", "batch", "administered_by", "verified_by"
    )


def governing_consent(subject: Subject, *, at: dt.datetime | None = None) -> Consent | None:
    """The consent that speaks for ``subject`` at ``at``: the latest one signed by then.
    A later signature (re-consent on a new version) supersedes the earlier ones."""
    at = at or timezone.now()
    return Consent.objects.filter(subject=subject, signed_at__lte=at).order_by("-signed_at", "-id").first()


def scope_withdrawn_at(consent: Consent, scope: str) -> dt.datetime | None:
    value = (consent.withdrawn_scopes or {}).get(scope)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def consent_allows(subject: Subject, scope: str, at: dt.datetime | None = None) -> bool:
    """Whether ``subject``'s consent covered ``scope`` at ``at`` (default: now).

    The scan pipeline calls this before accepting an upload or processing a scan.
    """
    scope = ConsentScope(scope).value
    at = at or timezone.now()
    consent = governing_consent(subject, at=at)
    if consent is None or not getattr(consent, f"scope_{scope}"):
        return False
    withdrawn = scope_withdrawn_at(consent, scope)
    return withdrawn is None or withdrawn > at


def latest_effective_document(trial: Trial, *, on: dt.date) -> ConsentDocument | None:
    return (
        ConsentDocument.objects.filter(trial=trial, effective_date__lte=on)
        .order_by("-effective_date", "-irb_approval_date", "-id")
        .first()
    )
