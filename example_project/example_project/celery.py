"""Celery application of the example site: ``celery -A example_project worker -B``.

The broker comes from ``CELERY_BROKER_URL`` (default: kombu's filesystem transport under
``var/broker/``, so no Redis is needed); the beat schedule is django-synerise's
``BEAT_SCHEDULE`` fragment (see ``settings.CELERY_BEAT_SCHEDULE``).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
