"""URLs of the django-synerise HTTP API; mount with ``path("synerise/", include(...))``."""

from __future__ import annotations

from django.urls import path

from .api import identity, views

app_name = "synerise"

urlpatterns = [
    path("auth/login/", views.login, name="login"),
    path("auth/login/<str:provider>/", views.provider_login, name="provider-login"),
    path("auth/refresh/", views.refresh, name="refresh"),
    path("auth/token/", views.token, name="token"),
    path("auth/logout/", views.logout, name="logout"),
    path("oauth/jwks.json", identity.jwks_view, name="oauth-jwks"),
    path("oauth/userinfo/", identity.userinfo_view, name="oauth-userinfo"),
    path("tracking/token/", views.web_sdk_token, name="web-sdk-token"),
]
