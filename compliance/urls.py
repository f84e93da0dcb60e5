from django.urls import path
from rest_framework.routers import DefaultRouter

from compliance import api

router = DefaultRouter()
router.register("exports", api.ExportViewSet, basename="export")
router.register("audit-events", api.AuditEventViewSet, basename="audit-event")
router.register("auth/tokens", api.ApiTokenViewSet, basename="api-token")

urlpatterns = [
    path("signatures/", api.SignatureApi.as_view(), name="signatures"),
    path("auth/token/", api.TokenApi.as_view(), name="auth-token"),
    path("auth/logout/", api.LogoutApi.as_view(), name="auth-logout"),
    *router.urls,
]
