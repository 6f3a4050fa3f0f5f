"""A ready Celery beat schedule fragment for the refresh pipeline (imports no Celery).

Merge it into your own schedule::

    from django_synerise.schedule import BEAT_SCHEDULE as SYNERISE_BEAT_SCHEDULE

    CELERY_BEAT_SCHEDULE = {**SYNERISE_BEAT_SCHEDULE, **CELERY_BEAT_SCHEDULE_OF_YOUR_PROJECT}

Run exactly one beat process. Correctness never depends on it (claims are decided by the
database), but two beats double the scheduler messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONNECT_INTERVAL",
    "CONNECT_TASK",
    "BEAT_SCHEDULE",
    "PURGE_EXPIRES",
    "PURGE_INTERVAL",
    "PURGE_TASK",
    "REFRESH_EXPIRES",
    "REFRESH_INTERVAL",
    "REFRESH_TASK",
]

#: Dotted name of the beat entry point (claims due tokens, fans out batches).
REFRESH_TASK = "django_synerise.tasks.refresh_expiring_tokens"
#: Dotted name of the retention task.
PURGE_TASK = "django_synerise.tasks.purge_tokens"
#: Seconds between two scheduler runs.
REFRESH_INTERVAL = 60.0
#: A scheduler message not started within this many seconds is discarded (shorter than the
#: period, so messages never pile up while workers are down; the next run recomputes due rows
#: from the database).
REFRESH_EXPIRES = 50
#: Dotted name of the task that retries pending identity-provider connections.
CONNECT_TASK = "django_synerise.tasks.connect_users"
#: Seconds between two runs of the pending connections.
CONNECT_INTERVAL = 60.0
#: Seconds between two purges (daily).
PURGE_INTERVAL = 24 * 3600.0
#: A purge message not started within an hour is discarded.
PURGE_EXPIRES = 3600

#: Beat entries (``schedule`` in seconds, so the default scheduler and django-celery-beat's
#: ``DatabaseScheduler`` both accept them).
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "django-synerise-refresh-expiring-tokens": {
        "task": REFRESH_TASK,
        "schedule": REFRESH_INTERVAL,
        "options": {"expires": REFRESH_EXPIRES},
    },
    "django-synerise-connect-pending-users": {
        "task": CONNECT_TASK,
        "schedule": CONNECT_INTERVAL,
        "kwargs": {"pending": True},
        "options": {"expires": REFRESH_EXPIRES},
    },
    "django-synerise-purge-tokens": {
        "task": PURGE_TASK,
        "schedule": PURGE_INTERVAL,
        "options": {"expires": PURGE_EXPIRES},
    },
}
