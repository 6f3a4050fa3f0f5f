"""App configuration of the demo app."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The example site's pages (no models)."""

    name = "demo"
    verbose_name = "django-synerise demo"
