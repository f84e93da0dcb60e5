"""Rows for the generic API tests in tests/trials (cross-site matrix, query counts,
sponsor sees no identity): see tests/trials/api_routes.py."""

from __future__ import annotations

from django.db import transaction

from audit.actions import AuditAction
from audit.chain import record_event
from compliance.models import Export
from trials.models import Membership, Role


def _export(cast, *, site=None):
    # Requested by the trial's sponsor when the test has one (a sponsor sees only its
    # own exports), else by the monitor; monitors see every export of their trial.
    sponsor = Membership.objects.filter(trial=cast.trial, role=Role.SPONSOR).select_related("user").first()
    requester = sponsor.user if sponsor else cast.monitor
    return Export.objects.create(
        kind=Export.Kind.SPONSOR_DEIDENTIFIED, trial=cast.trial, site=site, requested_by=requester
    )


def _export_at_site_a(cast):
    from tests import factories as f

    owner = f.UserFactory()
    Membership.objects.create(user=owner, trial=cast.trial, site=cast.site_a, role=Role.COORDINATOR)
    return Export.objects.create(kind=Export.Kind.REPORT_PDF, trial=cast.trial, site=cast.site_a, requested_by=owner)


def _event(cast, *, site_id=None):
    with transaction.atomic():
        return record_event(
            actor=None,
            action=AuditAction.SITE_CREATED,
            object_type="trials.site",
            object_id=site_id or "",
            trial_id=cast.trial.pk,
            site_id=site_id,
        )


def _token_at_site_a(cast):
    from compliance.tokens import token_issue
    from tests import factories as f

    owner = f.UserFactory()
    Membership.objects.create(user=owner, trial=cast.trial, site=cast.site_a, role=Role.COORDINATOR)
    return token_issue(user=owner, name="site A laptop").token


def _own_token(cast):
    from compliance.tokens import token_issue

    return token_issue(user=cast.monitor, name="monitor's laptop").token


HIDDEN_FROM_SITE_B = {
    "api-token": _token_at_site_a,
    "export": _export_at_site_a,
    "audit-event": lambda cast: _event(cast, site_id=cast.site_a.pk),
}

VISIBLE_TO_MONITOR = {
    "api-token": _own_token,
    "export": _export,
    "audit-event": _event,
}

# The audit trail is for monitors and auditors; a sponsor reads de-identified exports only.
HIDDEN_FROM_SPONSOR = {"audit-event"}
# Each user lists only their own tokens (the sponsor has none); no trial member sees another's.
HIDDEN_FROM_SPONSOR.add("api-token")
OWN_RECORDS = {"api-token"}
# The export row made above is still queued: its download answers 409 "not ready".
SPONSOR_DETAIL_STATUS = {"export-download": 409}
