"""``manage.py synerise_setup_beat``: create or update the django-celery-beat periodic tasks
of the refresh pipeline (refresh every minute, purge daily); safe to run on every deploy."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from django_synerise.services.beat import setup_beat_tasks


class Command(BaseCommand):
    """Thin wrapper over :func:`django_synerise.services.beat.setup_beat_tasks`."""

    help = (
        "Create or update django-celery-beat periodic tasks from "
        "django_synerise.schedule.BEAT_SCHEDULE (idempotent; keeps each task's enabled flag)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            results = setup_beat_tasks()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        for result in results:
            self.stdout.write(
                f"{result.action} {result.name}: {result.task} every {result.every} s"
            )
