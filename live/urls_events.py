"""Routes of the live event stream and the live alerts (``config.api_urls``)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from live import api_events, events, slices

router = SimpleRouter()
router.register("live-alerts", api_events.LiveAlertViewSet, basename="live-alert")

urlpatterns = [
    path("live-sessions/<int:pk>/events/", events.session_events, name="live-session-events"),
    path("live-sessions/<int:pk>/slice/", slices.session_slice, name="live-session-slice"),
    *router.urls,
]
