"""Django application configuration for django-synerise."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DjangoSyneriseConfig(AppConfig):
    """Registers the system checks and connects the receivers; nothing else happens here."""

    name = "django_synerise"
    label = "django_synerise"
    verbose_name = _("Synerise")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers  # Django's app loading: need the app registry

        checks.register_checks()
        receivers.connect()
