"""Test settings with django-allauth installed (run by tests/test_allauth.py in a child
pytest, so the main suite keeps its own settings)."""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS, MIDDLEWARE

INSTALLED_APPS = [*INSTALLED_APPS, "allauth", "allauth.account"]
MIDDLEWARE = [*MIDDLEWARE, "allauth.account.middleware.AccountMiddleware"]
ROOT_URLCONF = "tests.urls_allauth"

ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "email", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"

# No broker can be reached: a connection asked for at login is picked up by the next
# connect_users run (what the beat entry does), never by the login itself.
CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

if "NAME" in DATABASES["default"].get("TEST", {}):
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("SYNERISE_ALLAUTH_TEST_DB", "test_synerise_allauth")
    }
