from django.urls import path as django_path

from compliance.sponsor import not_for_sponsors
from web import identity_views, live_views, records_views, signature_views, viewer_views, views

app_name = "web"

# The pages a sponsor gets, each showing only the de-identified view; every other page
# answers a sponsor 404 (compliance.sponsor), so a new page is closed to them by default.
SPONSOR_PAGES = frozenset({"dashboard", "exports", "export-retry"})  # a sponsor retries their own failed exports


def path(route, view, kwargs=None, *, name):
    return django_path(route, view if name in SPONSOR_PAGES else not_for_sponsors(view), kwargs, name=name)


urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("subjects/", views.subject_list, name="subjects"),
    path("subjects/new/", views.subject_enrol, name="subject-enrol"),
    path("subjects/<int:pk>/", views.subject_detail, name="subject"),
    path("subjects/<int:pk>/consent/", views.consent_sign, name="consent-sign"),
    path("subjects/<int:pk>/injection/", views.injection_record, name="injection-record"),
    path("subjects/<int:pk>/upload/", views.scan_upload, name="scan-upload"),
    path("subjects/<int:pk>/sign/", views.subject_sign, name="subject-sign"),
    path("subjects/<int:pk>/edit/", views.subject_correct, name="subject-correct"),
    path("subjects/<int:pk>/status/", views.subject_status, name="subject-status"),
    path("subjects/<int:pk>/rois/", views.roi_define, name="roi-define"),
    # Not wrapped for sponsors: the view answers a sponsor 404 itself, after putting the
    # attempt on the access log (every refused read of identifiable data is recorded).
    django_path("subjects/<int:pk>/identity/", identity_views.subject_identity, name="subject-identity"),
    path("injections/<int:pk>/edit/", views.injection_correct, name="injection-correct"),
    path("consents/<int:pk>/edit/", views.consent_correct, name="consent-correct"),
    path("consents/<int:pk>/withdraw/", views.consent_withdraw, name="consent-withdraw"),
    path("products/", views.product_list, name="products"),
    path("lots/new/", views.lot_register, name="lot-register"),
    path("lots/<int:pk>/qc/", views.lot_qc, name="lot-qc"),
    path("lots/<int:pk>/edit/", views.lot_correct, name="lot-correct"),
    path("batches/new/", views.batch_register, name="batch-register"),
    path("batches/<int:pk>/label/", views.batch_label, name="batch-label"),
    path("batches/<int:pk>/release/", views.batch_release, name="batch-release"),
    path("batches/<int:pk>/edit/", views.batch_correct, name="batch-correct"),
    path("calibrations/", views.calibration_library, name="calibrations"),
    path("calibrations/new/", views.calibration_register, name="calibration-register"),
    path("calibrations/<int:pk>/retire/", views.calibration_retire, name="calibration-retire"),
    path("scans/", views.scan_list, name="scans"),
    path("scans/<int:pk>/", views.scan_detail, name="scan"),
    path("scans/<int:pk>/image/mip.png", views.scan_image, {"plane": "mip"}, name="scan-mip"),
    path("scans/<int:pk>/image/<str:plane>/<int:index>.png", views.scan_image, name="scan-slice"),
    path("scans/<int:pk>/values/<str:plane>/<int:index>.json", viewer_views.scan_slice_values, name="scan-values"),
    path("scans/<int:pk>/region/", viewer_views.scan_region, name="scan-region"),
    path("scans/<int:pk>/dicom.zip", views.scan_dicom, name="scan-dicom"),
    path("scans/<int:pk>/sign/", views.scan_sign, name="scan-sign"),
    path("signatures/awaiting/", signature_views.awaiting_signature, name="awaiting-signature"),
    path("scans/<int:pk>/retry/", views.scan_retry, name="scan-retry"),
    path("scans/<int:pk>/export/", views.scan_export, name="scan-export"),
    path("scans/<int:pk>/pacs/", views.scan_pacs_send, name="scan-pacs-send"),
    path("exports/", views.exports, name="exports"),
    path("exports/<int:pk>/retry/", views.export_retry, name="export-retry"),
    path("operations/", views.operations, name="operations"),
    # Record status, upload history, re-filing, batch upload (web/records_views.py).
    path("records/status/", records_views.status_grid, name="status-grid"),
    path("uploads/", records_views.upload_history, name="uploads"),
    path("uploads/batch/", records_views.batch_upload, name="batch-upload"),
    path("scans/<int:pk>/refile/", records_views.scan_refile, name="scan-refile"),
    # Live injection monitoring (web/live_views.py); a sponsor gets 404 (not in SPONSOR_PAGES).
    path("live/", live_views.live_index, name="live-list"),
    path("live/demo/", live_views.live_demo_start, name="live-demo"),
    path("live/<int:pk>/", live_views.live_page, name="live"),
    path("live/<int:pk>/token/", live_views.live_token, name="live-token"),
    path("injections/<int:pk>/live/", live_views.live_start, name="live-start"),
]
