"""The environment of a child process (Celery worker, management command) that runs
``tests.celery_settings`` against this test run's database and FakeSynerise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def child_env(fake: Any, **extra: str) -> dict[str, str]:
    """Return ``os.environ`` plus the settings module, the database pytest-django created,
    ``fake``'s URL and API key, and ``extra``; ``SYNERISE_TEST_SIGNAL_LOG`` only if in
    ``extra``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.celery_settings",
        "PYTHONPATH": str(ROOT),
        "SYNERISE_TEST_DB_NAME": connection.settings_dict["NAME"],
        "SYNERISE_TEST_FAKE_URL": fake.url,
        "SYNERISE_TEST_API_KEY": fake.api_key,
    }
    env.pop("SYNERISE_TEST_SIGNAL_LOG", None)
    env.update(extra)
    return env
