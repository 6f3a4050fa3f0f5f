"""Production-like settings: ``check --deploy --fail-level WARNING`` must report nothing.

Used by ``tests/test_reliability_security.py`` and by CI::

    python -m django check --deploy --fail-level WARNING --settings=tests.settings_prod

HTTPS-only Synerise base URL, dedicated Fernet keys (not derived from ``SECRET_KEY``), DEBUG
off, secure cookies, HSTS, SSL redirect, clickjacking protection, a Celery broker whose
``visibility_timeout`` outlives every time limit and retry countdown, the bundled beat
schedule, and a shared (Redis) cache for the login throttle. The secrets below are test
values generated for this file; a real project reads them from its environment or a vault.
"""

from __future__ import annotations

import django

from django_synerise.schedule import BEAT_SCHEDULE
from tests.settings import *  # noqa: F403
from tests.settings import MIDDLEWARE

DEBUG = False
SECRET_KEY = "3JmSavgj5oahgWawr-CCQu1Bkyo1tQSqCcHvfC9qPiq76U8Wu29Hw0OTR54DNaiB"
ALLOWED_HOSTS = ["app.example.com"]

MIDDLEWARE = [
    *MIDDLEWARE[:5],
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    *MIDDLEWARE[5:],
]

SECURE_SSL_REDIRECT = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = ["https://app.example.com"]
X_FRAME_OPTIONS = "DENY"

if django.VERSION >= (6, 1):  # a real mail server (the test settings use the memory backend)
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend"}}

SYNERISE = {
    "API_KEY": "production-like-profile-api-key",
    "BASE_URL": "https://api.synerise.com",
    "TIMEOUT": (3.05, 10),
    "TOTAL_TIMEOUT": 12,
    "VERIFY_SIGNATURE": True,
    "JWT_ALGORITHMS": ["RS512"],
    # Newest first: the second key is the one being rotated out.
    "TOKEN_ENCRYPTION_KEYS": [
        "fdG9Qd9LRvzNjHMs37Rd6-x9bP4IUOsHkkHhyo_Eibc=",
        "lSnk575Kb8EuYG0DPDUpU4XMnzbSRz1uGgELcA7O4qA=",
    ],
}

# The login throttle counts in a cache every web process shares (never contacted by checks).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/1",
    }
}

CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_TIME_LIMIT = 600
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BEAT_SCHEDULE = dict(BEAT_SCHEDULE)
