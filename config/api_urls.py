"""Every REST endpoint under /api/v1/. Each app contributes its own router."""

from django.urls import include, path

urlpatterns = [
    path("", include("trials.urls")),
    path("", include("compliance.urls")),
    path("", include("imaging.urls")),
    path("", include("live.urls")),
    path("", include("live.urls_events")),
]
