"""django-allauth integration: runs tests/allauth_login.py in a child pytest whose settings
install allauth (tests/settings_allauth.py), on a test database of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection

from tests.child_env import ROOT

pytestmark = pytest.mark.slow


def test_allauth_login_connects_the_user_in_a_real_allauth_install(require_postgres):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_allauth",
        "SYNERISE_ALLAUTH_TEST_DB": f"{connection.settings_dict['NAME']}_allauth",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "--ds", "tests.settings_allauth", "--create-db", "tests/allauth_login.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
