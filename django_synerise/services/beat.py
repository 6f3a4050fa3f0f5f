"""Create or update django-celery-beat periodic tasks from the package's beat schedule.

For projects that schedule with django-celery-beat's ``DatabaseScheduler`` instead of
``CELERY_BEAT_SCHEDULE``. Idempotent: each entry of
:data:`~django_synerise.schedule.BEAT_SCHEDULE` is one ``PeriodicTask`` row, found by its
name, created when missing and brought back to the package's task, interval and expiry
when it drifted; running it again changes nothing. An operator's ``enabled`` flag is kept.
Nothing runs at migrate or import time: call it from ``manage.py synerise_setup_beat``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from ..conversions import to_seconds
from ..schedule import BEAT_SCHEDULE

__all__ = ["BeatTaskResult", "setup_beat_tasks"]

CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class BeatTaskResult:
    """What :func:`setup_beat_tasks` did with one entry: ``action`` is ``created``,
    ``updated`` or ``unchanged``."""

    name: str
    task: str
    every: int
    action: str


def _seconds(value: Any) -> int:
    """Whole seconds (at least 1) of an interval schedule: a number or a ``timedelta``."""
    if isinstance(value, (timedelta, int, float)):
        return max(1, int(to_seconds(value)))
    raise ImproperlyConfigured(
        f"Only interval schedules (seconds or timedelta) can be set up, not {value!r}."
    )


def setup_beat_tasks(schedule: dict[str, dict[str, Any]] | None = None) -> list[BeatTaskResult]:
    """Create or update one django-celery-beat ``PeriodicTask`` per entry of ``schedule``
    (default :data:`~django_synerise.schedule.BEAT_SCHEDULE`), in one transaction.

    Each row gets the entry's ``task``, an ``IntervalSchedule`` of ``schedule`` seconds
    (reused when one exists), ``expire_seconds`` from ``options["expires"]`` and no crontab,
    solar or clocked schedule. New rows are enabled; existing rows keep their ``enabled``.

    :raises ImproperlyConfigured: ``django_celery_beat`` is not in ``INSTALLED_APPS``.
    """
    if not apps.is_installed("django_celery_beat"):
        raise ImproperlyConfigured(
            "django_celery_beat is not installed: pip install django-celery-beat, add "
            "'django_celery_beat' to INSTALLED_APPS and migrate, or merge "
            "django_synerise.schedule.BEAT_SCHEDULE into CELERY_BEAT_SCHEDULE instead."
        )
    # Optional dependency (django-celery-beat), checked above.
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    results: list[BeatTaskResult] = []
    with transaction.atomic():
        for name, entry in (schedule or BEAT_SCHEDULE).items():
            every = _seconds(entry["schedule"])
            interval = (
                IntervalSchedule.objects.filter(every=every, period=IntervalSchedule.SECONDS)
                .order_by("pk")
                .first()
            ) or IntervalSchedule.objects.create(every=every, period=IntervalSchedule.SECONDS)
            action = _store_task(PeriodicTask, name, _wanted_fields(entry, interval))
            results.append(BeatTaskResult(name, entry["task"], every, action))
    return results


def _wanted_fields(entry: dict[str, Any], interval: Any) -> dict[str, Any]:
    """The ``PeriodicTask`` fields a schedule entry asks for (``interval`` its schedule row)."""
    expires = (entry.get("options") or {}).get("expires")
    return {
        "task": entry["task"],
        "interval": interval,
        "crontab": None,
        "solar": None,
        "clocked": None,
        "expire_seconds": None if expires is None else int(expires),
        # As django-celery-beat stores them: JSON text.
        "args": json.dumps(list(entry.get("args") or [])),
        "kwargs": json.dumps(dict(entry.get("kwargs") or {}), sort_keys=True),
    }


def _store_task(model: Any, name: str, wanted: dict[str, Any]) -> str:
    """Create the task ``name`` (enabled) or bring its fields to ``wanted`` (keeping
    ``enabled``); return ``CREATED``, ``UPDATED`` or ``UNCHANGED``."""
    row = model.objects.select_for_update().filter(name=name).first()
    if row is None:
        model.objects.create(name=name, enabled=True, **wanted)
        return CREATED
    changed = [
        key
        for key, value in wanted.items()
        if getattr(row, f"{key}_id" if key in _FOREIGN_KEYS else key)
        != (value.pk if key in _FOREIGN_KEYS and value is not None else value)
    ]
    if not changed:
        return UNCHANGED
    for key in changed:
        setattr(row, key, wanted[key])
    row.save()
    return UPDATED


_FOREIGN_KEYS = frozenset({"interval", "crontab", "solar", "clocked"})
