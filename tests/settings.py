"""Settings for the django-synerise test suite.

PostgreSQL when ``DATABASE_URL`` is set (``postgres://user[:password]@host[:port]/name``),
SQLite otherwise. ``CELERY_BROKER_URL`` points Celery tests at a real broker.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import django

from django_synerise.schedule import BEAT_SCHEDULE

SECRET_KEY = "tests-only-secret-key-not-for-production-use-0123456789abcdef"  # noqa: S105
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_synerise",
]
# django-celery-beat (optional, Django < 6.1 only) for the synerise_setup_beat command and
# check W110; SYNERISE_TEST_WITHOUT_BEAT=1 stands for a project without it (which must never
# import Celery: django-celery-beat's models do).
try:
    import django_celery_beat  # noqa: F401
except ImportError:
    pass
else:
    if not os.environ.get("SYNERISE_TEST_WITHOUT_BEAT"):
        INSTALLED_APPS.append("django_celery_beat")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_synerise.middleware.SyneriseActivityMiddleware",
    "django_synerise.middleware.SyneriseTrackerMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django_synerise.backends.SyneriseBackend",
    "django.contrib.auth.backends.ModelBackend",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests only

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def _database_from_url(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"Unsupported DATABASE_URL scheme: {parts.scheme!r}")
    name = unquote(parts.path.lstrip("/")) or "postgres"
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        # test_<name>, as Django names it: runs against different databases of one server
        # (parallel checkouts, make stress next to make test) never share a test database.
        "TEST": {"NAME": os.environ.get("SYNERISE_TEST_DB", f"test_{name}")},
    }


#: The PostgreSQL options that let the server reuse the plans of repeated statements
#: (server-side parameters, psycopg's prepared statements after 5 runs; docs/scaling.rst).
#: ``SYNERISE_TEST_PREPARED=1`` runs the suite with them; ``benchmarks/api_overhead.py
#: --prepared`` measures with them.
PREPARED_STATEMENTS = {"server_side_binding": True, "prepare_threshold": 5}

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": _database_from_url(os.environ["DATABASE_URL"])}
    if os.environ.get("SYNERISE_TEST_PREPARED") == "1":
        DATABASES["default"]["OPTIONS"] = dict(PREPARED_STATEMENTS)
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

# The fake_synerise fixture points BASE_URL at a FakeSynerise server on 127.0.0.1.
SYNERISE = {
    "API_KEY": "test-profile-api-key",
    "BASE_URL": "http://127.0.0.1:9",
    "TOKEN_ENCRYPTION_KEYS": ["yM9vYSrVqH5-6cA3n0r3dWhQ3Xb5Oj2iY8FhX1zT0aA="],
    # Concurrency tests run many simultaneous sign-ins in one process, standing for many
    # processes; tests/test_security_bulkhead.py sets the per-process limit it exercises.
    "INTERACTIVE_CONCURRENCY": 64,
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_BEAT_SCHEDULE = dict(BEAT_SCHEDULE)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"django_synerise": {"level": "DEBUG", "handlers": ["null"], "propagate": True}},
}

# Django 6.1 replaced EMAIL_BACKEND with MAILERS (the test runner swaps in locmem either way).
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
