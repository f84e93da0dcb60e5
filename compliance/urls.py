from django.urls import path, re_path
from rest_framework.routers import DefaultRouter

from compliance import api

router = DefaultRouter()
router.register("exports", api.ExportViewSet, basename="export")
router.register("audit-events", api.AuditEventViewSet, basename="audit-event")
router.register("auth/tokens", api.ApiTokenViewSet, basename="api-token")

# Under the scan's URL (imaging's router has no such action): the export machinery's.
scan_dicom_exports = api.ScanDicomExportViewSet.as_view({"get": "list", "post": "create"}, basename="scan")

urlpatterns = [
    re_path(r"^scans/(?P<pk>[^/.]+)/dicom-exports/$", scan_dicom_exports, name="scan-dicom-exports"),
    path("auth/token/", api.TokenApi.as_view(), name="auth-token"),
    path("signatures/", api.SignatureApi.as_view(), name="signatures"),
    path("auth/token/", api.TokenApi.as_view(), name="auth-token"),
    path("auth/logout/", api.LogoutApi.as_view(), name="auth-logout"),
    *router.urls,
]
