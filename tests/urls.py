"""URLs of the test project."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.urls import include, path

from django_synerise.admin import SyneriseUserAdminMixin
from django_synerise.metrics import metrics_view

from .tracking_views import tracked_page


class UserAdmin(SyneriseUserAdminMixin, BaseUserAdmin):
    """The test project's user admin: Django's, with the Synerise account inline."""


# The project decides its own user admin (django_synerise never re-registers it).
if not isinstance(admin.site._registry.get(get_user_model()), UserAdmin):
    admin.site.unregister(get_user_model())
    admin.site.register(get_user_model(), UserAdmin)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("synerise/", include("django_synerise.urls")),
    path("metrics/", metrics_view, name="metrics"),
    # Django's own LoginView: a non-admin entry point that goes through authenticate().
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="admin/login.html"),
        name="login",
    ),
    # The tracking code under a strict Content Security Policy (browser test).
    path("tracked/", tracked_page, name="tracked"),
]
