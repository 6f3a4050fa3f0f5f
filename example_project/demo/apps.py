"""App configuration of the demo app."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The example site's pages (no models)."""

    name = "demo"
    verbose_name = "django-synerise demo"

    def ready(self) -> None:
        """Show the next step of a conditional login on the login page."""
        from django_synerise import signals

        from .views import remember_condition

        signals.login_conditions_required.connect(
            remember_condition, dispatch_uid="demo-login-conditions"
        )
