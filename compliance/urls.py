from django.urls import path
from rest_framework.routers import DefaultRouter

from compliance import api

router = DefaultRouter()
router.register("exports", api.ExportViewSet, basename="export")
router.register("audit-events", api.AuditEventViewSet, basename="audit-event")

urlpatterns = [
    path("signatures/", api.SignatureApi.as_view(), name="signatures"),
    *router.urls,
]
