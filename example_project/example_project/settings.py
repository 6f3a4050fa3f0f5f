"""Settings of the django-synerise example site, read from environment variables.

Every variable has a default that gives a working local demo: SQLite under ``var/``, the
bundled FakeSynerise on ``127.0.0.1:8765`` when ``SYNERISE_API_KEY`` is unset, and a Celery
broker on the local filesystem (no Redis). Set ``DATABASE_URL`` (``postgres://...``) and
``CELERY_BROKER_URL`` (``redis://...``) to use real services instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DEMO_VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool) -> bool:
    """Return the boolean value of environment variable ``name`` (1/true/yes/on)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Return the integer value of environment variable ``name``."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_list(name: str) -> list[str]:
    """Return the comma-separated environment variable ``name`` as a list (empty if unset)."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


# --------------------------------------------------------------------------- Django core

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY",
    "django-insecure-example-project-only-0d9f8a7c6b5e4d3c2b1a-change-me",
)
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS") or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_synerise",
    "demo",
]

try:  # Swagger UI / Redoc served from local files (optional package).
    import drf_spectacular_sidecar  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed extras
    HAS_SIDECAR = False
else:
    HAS_SIDECAR = True
    INSTALLED_APPS.append("drf_spectacular_sidecar")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Keeps last_used_at fresh for signed-in users, so background refresh keeps their tokens.
    "django_synerise.middleware.SyneriseActivityMiddleware",
    # After a sign-in, resets the web tracker's _snrs_uuid cookie to the profile's uuid.
    "django_synerise.middleware.SyneriseTrackerMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

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
                "demo.context_processors.demo",
            ]
        },
    }
]


def database_from_url(url: str) -> dict[str, Any]:
    """Return a Django ``DATABASES`` entry for ``postgres://user:password@host:port/name``.

    :raises ValueError: when the scheme is not ``postgres``/``postgresql``.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"Unsupported DATABASE_URL scheme: {parts.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": 60,
    }


if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # runserver and the Celery worker write to the same file: wait for the lock.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }

AUTHENTICATION_BACKENDS = [
    # Local staff accounts (the demo superuser) first; Synerise users have no local password.
    "django.contrib.auth.backends.ModelBackend",
    "django_synerise.backends.SyneriseBackend",
]
LOGIN_URL = "demo:login"
LOGIN_REDIRECT_URL = "demo:account"
LOGOUT_REDIRECT_URL = "demo:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --------------------------------------------------------------------------- Synerise

#: True when no real Synerise API key is configured: the demo talks to FakeSynerise.
USE_FAKE_SYNERISE = not os.environ.get("SYNERISE_API_KEY")
FAKE_SYNERISE_URL = os.environ.get("SYNERISE_FAKE_URL", "http://127.0.0.1:8765").rstrip("/")

SYNERISE: dict[str, Any] = {
    "API_KEY": os.environ.get("SYNERISE_API_KEY") or "fake-api-key",
    "BASE_URL": (
        FAKE_SYNERISE_URL
        if USE_FAKE_SYNERISE
        else os.environ.get("SYNERISE_BASE_URL", "https://api.synerise.com")
    ),
    "AUTH_API": os.environ.get("SYNERISE_AUTH_API", "v3"),
    # Fernet keys, newest first. Empty: derived from SECRET_KEY (development only).
    "TOKEN_ENCRYPTION_KEYS": env_list("SYNERISE_TOKEN_ENCRYPTION_KEYS"),
    # The demo's tokens live a few minutes (scripts/demo.py sets these from the token
    # lifetime), so background refreshes show up quickly. Production defaults: 900 / 300.
    "REFRESH_MARGIN": env_int("SYNERISE_REFRESH_MARGIN", 900),
    "REFRESH_JITTER": env_int("SYNERISE_REFRESH_JITTER", 300),
    "ADAPTER": "demo.adapter.DemoSyneriseAdapter",
    # Sign password logins in through the conditional endpoint, so the login page can say
    # what Synerise needs first (the demo's terms@example.com must accept the terms).
    "CONDITIONAL_LOGIN": env_bool("SYNERISE_CONDITIONAL_LOGIN", True),
    # The web tracking code: off unless a tracker key is given.
    "TRACKER_KEY": os.environ.get("SYNERISE_TRACKER_KEY") or None,
    "TRACKER_DOMAIN": os.environ.get("SYNERISE_TRACKER_DOMAIN") or "https://web.snrbox.com",
}
#: PEM private key signing Web SDK tokens, from the environment or a file (never committed).
_web_sdk_key_file = os.environ.get("SYNERISE_WEB_SDK_SIGNING_KEY_FILE")
if os.environ.get("SYNERISE_WEB_SDK_SIGNING_KEY"):
    SYNERISE["WEB_SDK_SIGNING_KEY"] = os.environ["SYNERISE_WEB_SDK_SIGNING_KEY"]
elif _web_sdk_key_file:
    SYNERISE["WEB_SDK_SIGNING_KEY"] = Path(_web_sdk_key_file).read_text()
if USE_FAKE_SYNERISE and SYNERISE["REFRESH_MARGIN"] < 300:
    # W002 warns that a short margin leaves little time to refresh a one-hour token; the
    # fake's demo tokens live only minutes, so a short margin is intended here.
    SILENCED_SYSTEM_CHECKS = ["django_synerise.W002"]
# This site as the Synerise OAUTH identity provider: users who sign in with a site account
# (a Django password) get a Synerise token too. scripts/demo.py keeps an EC P-256 key under
# var/ and points FakeSynerise at this site's JWKS; a real site reads its key from a secret
# store and enters the issuer, audience and JWKS URL in Synerise's OAuth settings.
DEMO_SITE_URL = os.environ.get("DEMO_SITE_URL", "http://127.0.0.1:8000").rstrip("/")
_OAUTH_KEY_FILE = os.environ.get("SYNERISE_OAUTH_SIGNING_KEY_FILE", "")
if _OAUTH_KEY_FILE and Path(_OAUTH_KEY_FILE).is_file():
    SYNERISE.update(
        {
            "OAUTH_SIGNING_KEYS": [Path(_OAUTH_KEY_FILE).read_text(encoding="ascii")],
            "OAUTH_ISSUER": os.environ.get("SYNERISE_OAUTH_ISSUER", DEMO_SITE_URL),
            "OAUTH_AUDIENCE": os.environ.get("SYNERISE_OAUTH_AUDIENCE", "django-synerise-demo"),
            "CONNECT_ON_LOGIN": True,
        }
    )
if os.environ.get("SYNERISE_BUSINESS_PROFILE_ID"):
    SYNERISE["BUSINESS_PROFILE_ID"] = os.environ["SYNERISE_BUSINESS_PROFILE_ID"]

#: Client ids of the identity providers' web SDKs. Unset: demo buttons that use the fake.
GOOGLE_CLIENT_ID = os.environ.get("GOOGLE_CLIENT_ID", "")
APPLE_CLIENT_ID = os.environ.get("APPLE_CLIENT_ID", "")
APPLE_REDIRECT_URI = os.environ.get("APPLE_REDIRECT_URI", "")
FACEBOOK_APP_ID = os.environ.get("FACEBOOK_APP_ID", "")

#: Credentials created by ``manage.py demo_setup`` (and printed by scripts/demo.py).
DEMO_ADMIN_USERNAME = os.environ.get("DEMO_ADMIN_USERNAME", "admin")
DEMO_ADMIN_PASSWORD = os.environ.get("DEMO_ADMIN_PASSWORD", "synerise-admin")
DEMO_CLIENT_PASSWORD = os.environ.get("DEMO_CLIENT_PASSWORD", "synerise-demo")

# --------------------------------------------------------------------------- DRF / OpenAPI

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "django-synerise example API",
    "DESCRIPTION": "Synerise client login, refresh, token and logout endpoints.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}
if HAS_SIDECAR:
    SPECTACULAR_SETTINGS.update(
        {
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
        }
    )

# --------------------------------------------------------------------------- Celery

BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Kombu's filesystem transport: messages are files under var/broker/, no server needed.
    # Its variant in example_project/broker.py writes each message whole before a worker
    # can read it (kombu's own may hand the worker an empty file, and the worker exits).
    CELERY_BROKER_TRANSPORT = "example_project.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.5,
    }
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
#: Seconds between two beat runs of the refresh task (the demo uses a short interval).
DEMO_BEAT_INTERVAL = float(os.environ.get("DEMO_BEAT_INTERVAL", "0") or 0)


def _beat_schedule() -> dict[str, Any]:
    """Return django-synerise's beat fragment, with a shorter interval when requested."""
    from django_synerise.schedule import BEAT_SCHEDULE

    schedule = {name: dict(entry) for name, entry in BEAT_SCHEDULE.items()}
    if DEMO_BEAT_INTERVAL > 0:
        for entry in schedule.values():
            if str(entry.get("task", "")).endswith("refresh_expiring_tokens"):
                entry["schedule"] = DEMO_BEAT_INTERVAL
    return schedule


CELERY_BEAT_SCHEDULE = _beat_schedule()

# --------------------------------------------------------------------------- logging

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django_synerise": {
            "level": os.environ.get("SYNERISE_LOG_LEVEL", "INFO"),
            "handlers": ["console"],
            "propagate": False,
        },
        "demo": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}
