"""Trial set-up: trials, sites and memberships (platform administrators)."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from audit.actions import AuditAction
from audit.chain import diff
from trials.models import (
    Membership,
    Site,
    Trial,
)
from trials.services._common import _audit, _require_platform_admin, _snapshot


def trial_create(
    *,
    actor,
    protocol_number: str,
    title: str,
    phase: str,
    status: str = Trial.Status.PLANNED,
    off_target_alert_percent: Decimal | None = None,
) -> Trial:
    _require_platform_admin(actor, "create a trial")
    trial = Trial(protocol_number=protocol_number, title=title, phase=phase, status=status)
    if off_target_alert_percent is not None:
        trial.off_target_alert_percent = off_target_alert_percent
    with transaction.atomic():
        trial.full_clean()
        trial.save()
        _audit(
            actor=actor,
            action=AuditAction.TRIAL_CREATED,
            obj=trial,
            trial_id=trial.pk,
            changes=diff(None, _snapshot(trial)),
        )
    return trial


def site_create(*, actor, trial: Trial, code: str, name: str, time_zone: str) -> Site:
    _require_platform_admin(actor, "add a site")
    site = Site(trial=trial, code=code, name=name, time_zone=time_zone)
    with transaction.atomic():
        site.full_clean()
        site.save()
        _audit(
            actor=actor,
            action=AuditAction.SITE_CREATED,
            obj=site,
            trial_id=trial.pk,
            site_id=site.pk,
            changes=diff(None, _snapshot(site)),
        )
    return site


def membership_grant(*, actor, user, trial: Trial, role: str, site: Site | None = None) -> Membership:
    _require_platform_admin(actor, "grant a role")
    membership = Membership(user=user, trial=trial, site=site, role=role)
    with transaction.atomic():
        membership.full_clean()
        membership.save()
        _audit(
            actor=actor,
            action=AuditAction.MEMBERSHIP_GRANTED,
            obj=membership,
            trial_id=trial.pk,
            site_id=site.pk if site else None,
            changes=diff(None, _snapshot(membership)),
        )
    return membership
