from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from compliance import views as compliance_views

urlpatterns = [
    # The browser pages; "/" is the trial dashboard (it replaces compliance's placeholder home).
    path("", include("web.urls")),
    path("", compliance_views.home, name="home"),
    path("accounts/", include("compliance.urls_accounts")),
    path("compliance/", include("compliance.urls_pages")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Signed-in users only (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"]); the docs page sends
    # an anonymous browser to the sign-in page.
    path("api/docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")), name="api-docs"),
    path("api/v1/", include("config.api_urls")),
]

# JSON error envelope under /api/, friendly pages elsewhere (config.api_errors).
handler400 = "config.api_errors.bad_request"
handler403 = "config.api_errors.permission_denied"
handler404 = "config.api_errors.page_not_found"
handler500 = "config.api_errors.server_error"
