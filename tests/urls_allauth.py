"""URLs of the allauth test project: the test project's plus django-allauth's own views."""

from __future__ import annotations

from django.urls import include, path

from tests.urls import urlpatterns as base_urlpatterns

urlpatterns = [*base_urlpatterns, path("allauth/", include("allauth.urls"))]
