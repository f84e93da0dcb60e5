"""Who may do what, where. One place that turns memberships into answers.

Services call ``require_role`` before any write; selectors use ``visible_site_ids``
and ``visible_trial_ids`` for every read. A refusal is a RuleViolation with code
``forbidden`` and HTTP status 403.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from config.errors import RuleViolation
from trials.models import Membership, Role, Site, Subject, Trial

# Who may write what, by site role. Monitors, sponsors and auditors write nothing here.
ENROL_ROLES = frozenset({Role.COORDINATOR})
CONSENT_ROLES = frozenset({Role.COORDINATOR})
PRODUCT_ROLES = frozenset({Role.COORDINATOR})  # nanoparticle lots and cell batches
INJECTION_ROLES = frozenset({Role.COORDINATOR})
# Roles whose members may give or verify a dose at their site.
CLINICAL_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR})

# The trial's shared resources (nanoparticle lots, consent document versions): every
# site depends on them, so only a trial-level role changes them, never one site's staff.
TRIAL_RESOURCE_ROLES = frozenset({Role.TRIAL_MANAGER})
# Trial-wide roles that read every site's records. The trial manager reads the trial's
# shared resources only.
READ_ALL_SITES_ROLES = frozenset({Role.MONITOR, Role.SPONSOR, Role.AUDITOR})

# Protected health information: at the subject's own site for these ...
PHI_SITE_ROLES = frozenset({Role.COORDINATOR, Role.INVESTIGATOR})
# ... and trial-wide for these. Never sponsors, never imaging staff.
PHI_TRIAL_WIDE_ROLES = frozenset({Role.MONITOR})


def active_memberships(user) -> QuerySet[Membership]:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Membership.objects.none()
    return Membership.objects.filter(user=user, active=True)


def visible_site_ids(user) -> QuerySet:
    """Ids of the sites whose records ``user`` may read: the sites of their site
    memberships, and every site of a trial where they hold a trial-wide reading role."""
    memberships = active_memberships(user)
    return Site.objects.filter(
        Q(id__in=memberships.filter(site__isnull=False).values("site_id"))
        | Q(trial_id__in=memberships.filter(site__isnull=True, role__in=READ_ALL_SITES_ROLES).values("trial_id"))
    ).values("id")


def visible_trial_ids(user) -> QuerySet:
    return Trial.objects.filter(id__in=active_memberships(user).values("trial_id")).values("id")


def sponsor_trial_ids(user) -> QuerySet:
    """Ids of the trials ``user`` reads as a sponsor: de-identified, and only subjects whose
    data-sharing consent is in force (``compliance.sponsor`` applies the rule)."""
    return active_memberships(user).filter(role=Role.SPONSOR).values("trial_id")


def roles_at(user, site: Site) -> set[str]:
    """The roles ``user`` holds at ``site``, trial-wide roles of its trial included."""
    return set(
        active_memberships(user)
        .filter(Q(site=site) | Q(site__isnull=True, trial_id=site.trial_id))
        .values_list("role", flat=True)
    )


def roles_in_trial(user, trial: Trial) -> set[str]:
    return set(active_memberships(user).filter(trial=trial).values_list("role", flat=True))


def require_role(user, *, site: Site | None = None, trial: Trial | None = None, roles, action: str) -> None:
    """Refuse with 403 unless ``user`` holds one of ``roles`` at ``site`` (or, with
    ``trial``, at any site of that trial)."""
    if site is not None:
        held, where = roles_at(user, site), f"site {site.code}"
    elif trial is not None:
        held, where = roles_in_trial(user, trial), f"trial {trial.protocol_number}"
    else:
        raise TypeError("require_role needs a site or a trial")
    if not held & {str(r) for r in roles}:
        needed = " or ".join(sorted(str(r) for r in roles))
        raise RuleViolation("forbidden", f"Only a {needed} at {where} may {action}.")


def require_trial_role(user, *, trial: Trial, roles, action: str) -> None:
    """Refuse with 403 unless ``user`` holds one of ``roles`` for the whole of ``trial``
    (a trial-wide membership): a role held at one site never counts here."""
    held = set(active_memberships(user).filter(trial=trial, site__isnull=True).values_list("role", flat=True))
    if not held & {str(r) for r in roles}:
        needed = " or ".join(sorted(str(r) for r in roles))
        raise RuleViolation(
            "forbidden",
            f"Only a trial-wide {needed} of trial {trial.protocol_number} may {action}: "
            "it is shared by every site of the trial.",
        )


def can_read_identity(user, subject: Subject) -> bool:
    memberships = active_memberships(user)
    return memberships.filter(
        Q(site_id=subject.site_id, role__in=PHI_SITE_ROLES)
        | Q(site__isnull=True, trial_id=subject.trial_id, role__in=PHI_TRIAL_WIDE_ROLES)
    ).exists()


def can_write_identity(user, subject: Subject) -> bool:
    # Identity is recorded at enrolment by the site; monitors only read it.
    return active_memberships(user).filter(site_id=subject.site_id, role__in=PHI_SITE_ROLES).exists()
