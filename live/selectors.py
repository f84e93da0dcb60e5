"""Reads of live sessions, scoped to the asking user's sites.

Site members (all roles at the session's site) and trial-wide monitors and auditors read
a site's sessions; a sponsor reads nothing live (not even de-identified: the live view
is identified clinical data as it happens), so their queryset is empty and a detail 404."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from live.models import LiveAlert, LiveMark, LiveSession
from trials.permissions.access import sponsor_trial_ids, visible_site_ids


def live_sessions_visible_to(user) -> QuerySet[LiveSession]:
    return (
        LiveSession.objects.filter(
            Q(subject__site_id__in=visible_site_ids(user)), ~Q(subject__trial_id__in=sponsor_trial_ids(user))
        )
        .select_related("subject__site", "injection", "scanner", "system_matrix")
        .prefetch_related("marks__created_by")
    )


def live_alerts_visible_to(user) -> QuerySet[LiveAlert]:
    """The alerts of the sessions ``user`` may watch."""
    return LiveAlert.objects.filter(session__in=live_sessions_visible_to(user).values("id")).select_related(
        "session__subject__site", "acknowledged_by"
    )


def session_marks(session: LiveSession) -> list[LiveMark]:
    """The injection marks of a session already read through ``live_sessions_visible_to``,
    in the order entered."""
    return list(LiveMark.objects.filter(session=session).select_related("created_by").order_by("at", "id"))
