"""URLs of the demo pages (namespace ``demo``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "demo"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.login_view, name="login"),
    path("login/site/", views.site_login, name="site-login"),
    path("login/demo/<str:provider>/", views.demo_provider_login, name="demo-provider-login"),
    path("logout/", views.logout_view, name="logout"),
    path("account/", views.account, name="account"),
    path("account/status/", views.account_status, name="account-status"),
    path("api/", views.api_page, name="api"),
]
