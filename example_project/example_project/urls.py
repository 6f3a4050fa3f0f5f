"""URLs of the example site: demo pages, the admin, the Synerise API and its OpenAPI schema."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("", include("demo.urls")),
    path("admin/", admin.site.urls),
    path("synerise/", include("django_synerise.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]

if settings.HAS_SIDECAR:
    from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

    urlpatterns += [
        path("api/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
        path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    ]
