"""Reads of live monitoring data, scoped to the asking user's sites.

Site members and trial-wide monitors and auditors watch a site's sessions; sponsors see
nothing live (no row at all: every detail, event stream and alert of theirs is a 404)."""

from __future__ import annotations

from django.db.models import QuerySet

from live.models import LiveAlert, LiveSession
from trials.permissions.access import sponsor_trial_ids, visible_site_ids


def live_sessions_visible_to(user) -> QuerySet[LiveSession]:
    return (
        LiveSession.objects.filter(subject__site_id__in=visible_site_ids(user))
        .exclude(subject__trial_id__in=sponsor_trial_ids(user))
        .select_related("subject__site", "subject__trial", "injection", "scanner", "system_matrix")
    )


def live_alerts_visible_to(user) -> QuerySet[LiveAlert]:
    return LiveAlert.objects.filter(session__in=live_sessions_visible_to(user).values("id")).select_related(
        "session__subject__site", "acknowledged_by"
    )
