"""Rows for the generic API tests in tests/trials (cross-site matrix, query counts,
sponsor sees no identity): see tests/trials/api_routes.py."""

from __future__ import annotations

from live.models import LiveAlert, LiveSession
from tests import factories as f
from tests.imaging import factories as fi
from tests.trials.api_routes import _injection_a


def _live_session_a(cast):
    injection = _injection_a(cast)
    return LiveSession.objects.create(
        injection=injection,
        subject=injection.subject,
        scanner=fi.ScannerFactory(site=cast.site_a),
        created_by=f.UserFactory(),
    )


def _live_alert_a(cast):
    return LiveAlert.objects.create(
        session=_live_session_a(cast), kind=LiveAlert.Kind.LAG, frame=12, message="Live results arrive late."
    )


# Every live record hangs off a session of an injection at site A. The session's event
# stream (live.events, /live-sessions/{id}/events/) is part of the "live-session" resource.
HIDDEN_FROM_SITE_B = {"live-session": _live_session_a, "live-alert": _live_alert_a}
VISIBLE_TO_MONITOR = dict(HIDDEN_FROM_SITE_B)
# Sponsors see nothing live (issue #15): empty lists, 404 details and streams.
HIDDEN_FROM_SPONSOR = {"live-session", "live-alert"}
