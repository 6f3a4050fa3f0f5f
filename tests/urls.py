"""URLs of the test project."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from .tracking_views import tracked_page

urlpatterns = [
    path("admin/", admin.site.urls),
    path("synerise/", include("django_synerise.urls")),
    # Django's own LoginView: a non-admin entry point that goes through authenticate().
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="admin/login.html"),
        name="login",
    ),
    # The tracking code under a strict Content Security Policy (browser test).
    path("tracked/", tracked_page, name="tracked"),
]
