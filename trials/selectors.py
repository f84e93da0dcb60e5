"""Reads of trial data, always scoped to what the asking user may see.

Every query that returns trial data goes through a function here. Lists are shaped
for the API (select_related / annotations) so a page costs the same number of queries
whatever its size.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
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
    SubjectIdentity,
    Trial,
)
from trials.permissions.access import active_memberships, sponsor_trial_ids, visible_site_ids, visible_trial_ids


def subjects_sharing_data() -> QuerySet:
    """Ids of the subjects whose data-sharing consent is in force now, as one subquery:
    the sponsor data set and every read of a sponsor are limited to these subjects.

    The queryset form of :func:`consent_allows` (``subject, "data_sharing"``, now): the
    governing consent comes from the same :func:`_signed_by` query, and a withdrawal
    counts once recorded, which is :func:`scope_withdrawn_by` at "now" for every
    withdrawal not dated in the future (consent_withdraw allows only clock skew).
    tests/trials/test_it_holds_consent_at_its_boundaries.py holds the two together."""
    governing = _signed_by(OuterRef("pk"), timezone.now()).values("id")[:1]
    sharing = Consent.objects.filter(scope_data_sharing=True).exclude(
        withdrawn_scopes__has_key=ConsentScope.DATA_SHARING.value
    )
    return (
        Subject.objects.annotate(governing_consent=Subquery(governing))
        .filter(governing_consent__in=sharing.values("id"))
        .values("id")
    )


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


def first_site_member(site: Site, role: str):
    """The first (by username) active user with ``role`` at ``site``, or None: who acts for
    the site where a command acts on its behalf (the demo loaders, the demo stream)."""
    from django.contrib.auth import get_user_model

    return (
        get_user_model()
        .objects.filter(trial_memberships__site=site, trial_memberships__role=role, trial_memberships__active=True)
        .order_by("username")
        .first()
    )


def subjects_visible_to(user) -> QuerySet[Subject]:
    return Subject.objects.filter(Q(site_id__in=visible_site_ids(user)), sponsor_limited(user, "")).select_related(
        "site", "trial"
    )


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
    batches = CellBatch.objects.filter(
        Q(site_id__in=visible_site_ids(user)), sponsor_limited(user, "donor_subject", nullable=True, trial="trial_id")
    ).select_related("site", "trial", "nanoparticle_lot", "donor_subject")
    return with_cells_remaining(batches)


def batch_cells_remaining(batch: CellBatch) -> int:
    injected = Injection.objects.filter(batch=batch).aggregate(total=Sum("administered_cells"))["total"] or 0
    return batch.cell_count - injected


def injections_visible_to(user) -> QuerySet[Injection]:
    return Injection.objects.filter(
        Q(subject__site_id__in=visible_site_ids(user)), sponsor_limited(user)
    ).select_related("subject", "subject__site", "batch", "administered_by", "verified_by")


# ---------------------------------------------------------------------- consent in force
#
# The one home of the rule "consent in force": a consent speaks for its subject from the
# instant it is signed (inclusive) until the instant a scope is withdrawn (exclusive).
# The two comparisons are written here once (_signed_by, scope_withdrawn_by); every
# other place (consent_allows, trials.services.assert_scope_active, the sponsor's
# subjects_sharing_data) calls them.


def _signed_by(subject, at) -> QuerySet[Consent]:
    """The consents of ``subject`` (a Subject, an id or an OuterRef) signed by ``at``,
    the governing one first: a later signature (re-consent) supersedes the earlier."""
    return Consent.objects.filter(subject=subject, signed_at__lte=at).order_by("-signed_at", "-id")


def governing_consent(subject: Subject, *, at: dt.datetime | None = None) -> Consent | None:
    """The consent that speaks for ``subject`` at ``at``: the latest one signed by then.
    A later signature (re-consent on a new version) supersedes the earlier ones."""
    return _signed_by(subject, at or timezone.now()).first()


def governing_consents(subject_ids, *, at: dt.datetime | None = None) -> dict[int, Consent]:
    """``governing_consent`` for many subjects in one query: subject id -> the consent that
    speaks for it at ``at`` (subjects with none signed by then are left out)."""
    found: dict[int, Consent] = {}
    signed = Consent.objects.filter(subject_id__in=list(subject_ids), signed_at__lte=at or timezone.now())
    for consent in signed.order_by("subject_id", "-signed_at", "-id"):
        found.setdefault(consent.subject_id, consent)
    return found


def scope_withdrawn_at(consent: Consent, scope: str) -> dt.datetime | None:
    value = (consent.withdrawn_scopes or {}).get(scope)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def scope_withdrawn_by(consent: Consent, scope: str, at: dt.datetime) -> dt.datetime | None:
    """When ``scope`` of ``consent`` was withdrawn, if that was at or before ``at``."""
    withdrawn = scope_withdrawn_at(consent, scope)
    return withdrawn if withdrawn is not None and withdrawn <= at else None


@dataclass(frozen=True)
class ConsentStanding:
    """Whether a scope was in force at ``at``, and if not, why: no governing consent
    granting it (``consent`` is None) or a withdrawal at ``withdrawn_at``."""

    scope: str
    at: dt.datetime
    consent: Consent | None
    withdrawn_at: dt.datetime | None = None

    @property
    def in_force(self) -> bool:
        return self.consent is not None and self.withdrawn_at is None


def consent_standing(subject: Subject, scope: str, at: dt.datetime | None = None) -> ConsentStanding:
    """The rule, per subject: ``consent_allows`` and ``assert_scope_active`` both ask it."""
    at = at or timezone.now()
    return scope_standing(governing_consent(subject, at=at), scope, at)


def scope_standing(consent: Consent | None, scope: str, at: dt.datetime) -> ConsentStanding:
    """``consent_standing`` given the governing consent at ``at`` (``governing_consents``
    finds it for many subjects in one query): the status grid asks this."""
    scope = ConsentScope(scope).value
    if consent is None or not getattr(consent, f"scope_{scope}"):
        return ConsentStanding(scope, at, None)
    return ConsentStanding(scope, at, consent, scope_withdrawn_by(consent, scope, at))


def consent_allows(subject: Subject, scope: str, at: dt.datetime | None = None) -> bool:
    """Whether ``subject``'s consent covered ``scope`` at ``at`` (default: now)."""
    return consent_standing(subject, scope, at).in_force


def latest_effective_document(trial: Trial, *, on: dt.date) -> ConsentDocument | None:
    return (
        ConsentDocument.objects.filter(trial=trial, effective_date__lte=on)
        .order_by("-effective_date", "-irb_approval_date", "-id")
        .first()
    )


def identity_recorded(subject: Subject) -> bool:
    """Whether ``subject`` has an identity on record: a yes or no, none of its values (not a
    read of identifiable data, and so not audited)."""
    return SubjectIdentity.objects.filter(subject=subject).exists()
