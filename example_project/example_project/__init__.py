"""The django-synerise example site (settings, URLs, Celery app)."""

from __future__ import annotations

try:  # Load the Celery app with Django so shared_task uses it (Celery is optional).
    from .celery import app as celery_app
except ImportError:  # pragma: no cover - the site runs without the celery extra
    celery_app = None

__all__ = ["celery_app"]
