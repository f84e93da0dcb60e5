"""The live alerts API: list a session's alerts, acknowledge one.

GET  /api/v1/live-alerts/?session=ID          the alerts of the sessions the user may watch
GET  /api/v1/live-alerts/{id}/
POST /api/v1/live-alerts/{id}/acknowledge/    {"reason"}: a clinician of the site (audited)

The event stream of a session (``/api/v1/live-sessions/{id}/events/``) is ``live.events``.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import action

from config.viewsets import ScopedViewSet
from live.models import LiveAlert
from live.selectors import live_alerts_visible_to
from live.services.alerts import alert_acknowledge
from trials.filters import IdFilterSet
from trials.serializers import ReasonInput


class LiveAlertOutput(serializers.ModelSerializer):
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", read_only=True, allow_null=True)

    class Meta:
        model = LiveAlert
        fields = [
            "id",
            "session",
            "kind",
            "frame",
            "acquired_at",
            "value_percent",
            "threshold_percent",
            "message",
            "created_at",
            "acknowledged_by",
            "acknowledged_at",
            "acknowledgement_reason",
        ]
        read_only_fields = fields


class LiveAlertFilter(IdFilterSet):
    class Meta(IdFilterSet.Meta):
        model = LiveAlert
        fields = ["session", "kind"]


class LiveAlertViewSet(ScopedViewSet):
    """Alerts raised by the live worker (provisional: from live numbers, decision support only)."""

    selector = live_alerts_visible_to
    serializer_class = LiveAlertOutput
    filterset_class = LiveAlertFilter

    @extend_schema(
        request=ReasonInput,
        responses=LiveAlertOutput,
        summary="Acknowledge a live alert with a reason (investigator, coordinator or imaging staff of the site)",
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        alert = self.get_object()  # another site's alert is a 404 whatever the body
        reason = self.validated(ReasonInput)["reason"]
        return self.output(alert_acknowledge(actor=request.user, alert=alert, reason=reason))
