from django.contrib import admin
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
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("config.api_urls")),
]
