"""Settings of the Celery worker started by tests/test_tasks_celery.py (env-driven).

The worker must use the database pytest-django created (``SYNERISE_TEST_DB_NAME``) and the
FakeSynerise the test module started (``SYNERISE_TEST_FAKE_URL``/``SYNERISE_TEST_API_KEY``).
Short leases, timeouts and backoff keep the Celery tests under a minute.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, SYNERISE

if os.environ.get("SYNERISE_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["SYNERISE_TEST_DB_NAME"]

SYNERISE = {
    **SYNERISE,
    "BASE_URL": os.environ.get("SYNERISE_TEST_FAKE_URL", SYNERISE["BASE_URL"]),
    "API_KEY": os.environ.get("SYNERISE_TEST_API_KEY", SYNERISE["API_KEY"]),
    "LEASE_SECONDS": 3,
    "TOTAL_TIMEOUT": 2,
    "TIMEOUT": (1, 2),
    "REFRESH_BATCH_SIZE": 10,
    "REFRESH_CONCURRENCY": 4,
    "RETRY_AFTER_MAX": 30,
    "BREAKER_THRESHOLD": 1000,
    "HALT_PROBE_MAX": 0.5,
    # Extra keys for one test module's worker (JSON object), e.g. bigger batches.
    **json.loads(os.environ.get("SYNERISE_TEST_OVERRIDES", "{}")),
}

# A global refresh rate limit counted in a shared Redis cache (tests/test_ratelimit.py).
if os.environ.get("SYNERISE_TEST_RATE_LIMIT"):
    SYNERISE["REFRESH_RATE_LIMIT"] = float(os.environ["SYNERISE_TEST_RATE_LIMIT"])
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["SYNERISE_TEST_CACHE_URL"],
            "KEY_PREFIX": os.environ.get("SYNERISE_TEST_CACHE_PREFIX", ""),
        }
    }

# When each refresh call starts, logged for the rate limit's jitter (tests/call_log.py).
if os.environ.get("SYNERISE_TEST_CALL_LOG"):
    SYNERISE["ADAPTER"] = "tests.call_log.CallLogAdapter"

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("SYNERISE_TEST_QUEUE", "celery")
CELERY_TASK_ANNOTATIONS = {"django_synerise.tasks.refresh_tokens": {"backoff_base": 0.5}}
