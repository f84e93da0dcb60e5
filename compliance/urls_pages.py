from django.urls import path

from compliance import views
from compliance.sponsor import not_for_sponsors

app_name = "compliance"

urlpatterns = [
    path("audit/", not_for_sponsors(views.audit_browser), name="audit-browser"),
]
