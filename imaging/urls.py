from django.urls import path
from rest_framework.routers import SimpleRouter

from imaging import api

router = SimpleRouter()
router.register("scans", api.ScanViewSet, basename="scan")
router.register("scanners", api.ScannerViewSet, basename="scanner")
router.register("system-matrices", api.SystemMatrixViewSet, basename="system-matrix")
router.register("measurements", api.MeasurementViewSet, basename="measurement")
router.register("rois", api.RoiViewSet, basename="roi")
router.register("alerts", api.AlertViewSet, basename="alert")
router.register("dicom-sends", api.DicomSendViewSet, basename="dicom-send")

upload_resource = api.UploadResourceViewSet.as_view(
    {"head": "offset", "patch": "append", "delete": "terminate"}, basename="upload"
)
time_course = api.SubjectTimeCourseViewSet.as_view({"get": "retrieve"}, basename="subject-time-course")

urlpatterns = [
    path("uploads/", api.UploadCollectionApi.as_view(), name="upload-list"),
    path("uploads/<uuid:pk>/", upload_resource, name="upload-resource"),
    path("subjects/<int:pk>/time-course/", time_course, name="subject-time-course"),
    path("time-course/", api.TimeCourseApi.as_view(), name="time-course"),
    *router.urls,
]
