from django.urls import path

from web import views

app_name = "web"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("subjects/", views.subject_list, name="subjects"),
    path("subjects/new/", views.subject_enrol, name="subject-enrol"),
    path("subjects/<int:pk>/", views.subject_detail, name="subject"),
    path("subjects/<int:pk>/consent/", views.consent_sign, name="consent-sign"),
    path("subjects/<int:pk>/injection/", views.injection_record, name="injection-record"),
    path("subjects/<int:pk>/upload/", views.scan_upload, name="scan-upload"),
    path("subjects/<int:pk>/sign/", views.subject_sign, name="subject-sign"),
    path("consents/<int:pk>/withdraw/", views.consent_withdraw, name="consent-withdraw"),
    path("products/", views.product_list, name="products"),
    path("lots/new/", views.lot_register, name="lot-register"),
    path("lots/<int:pk>/qc/", views.lot_qc, name="lot-qc"),
    path("batches/new/", views.batch_register, name="batch-register"),
    path("batches/<int:pk>/label/", views.batch_label, name="batch-label"),
    path("batches/<int:pk>/release/", views.batch_release, name="batch-release"),
    path("scans/<int:pk>/", views.scan_detail, name="scan"),
    path("scans/<int:pk>/image/mip.png", views.scan_image, {"plane": "mip"}, name="scan-mip"),
    path("scans/<int:pk>/image/<str:plane>/<int:index>.png", views.scan_image, name="scan-slice"),
    path("scans/<int:pk>/dicom.zip", views.scan_dicom, name="scan-dicom"),
    path("scans/<int:pk>/sign/", views.scan_sign, name="scan-sign"),
    path("exports/", views.exports, name="exports"),
]
