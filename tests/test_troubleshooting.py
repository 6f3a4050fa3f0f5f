"""docs/troubleshooting.rst quotes the system check messages as Django prints them: each quoted
line is produced again here, from the settings the page says cause it."""

from __future__ import annotations

import re

import pytest
from django.core import checks

from tests.docs_snippets import DOCS

PAGE = DOCS / "troubleshooting.rst"
QUOTED = re.compile(r"^\s+(?P<obj>[\w.]+): \((?P<id>django_synerise\.[EW]\d{3})\) (?P<msg>.+)$")

#: Settings that produce each quoted id on the quickstart's development site (tests.settings
#: stands in for it; every override is what the page names as the cause).
CAUSES = {
    "django_synerise.W003": {"SYNERISE": {"TOKEN_ENCRYPTION_KEYS": []}},
    "django_synerise.E037": {"SYNERISE": {"TOKEN_ENCRYPTION_KEYS": []}},
    "django_synerise.E038": {"SYNERISE": {"BASE_URL": "http://127.0.0.1:8765"}},
    "django_synerise.E001": {"SYNERISE": {"API_KEY": ""}},
    "django_synerise.E002": {"SYNERISE": {"APIKEY": "x"}},
    "django_synerise.E029": {"SYNERISE": {"TOKEN_ENCRYPTION_KEYS": ["not-a-key"]}},
    "django_synerise.W005": {
        "AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend"]
    },
    "django_synerise.W006": {
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CELERY_BEAT_SCHEDULE": {},
    },
}


def quoted_checks() -> list[tuple[str, str, str]]:
    """The (id, object, message) of every check line quoted on the page."""
    found = []
    for line in PAGE.read_text().splitlines():
        match = QUOTED.match(line)
        if match:
            found.append((match["id"], match["obj"], match["msg"]))
    return found


def test_the_page_quotes_every_check_a_new_site_meets():
    assert sorted({quoted[0] for quoted in quoted_checks()}) == sorted(CAUSES)


@pytest.mark.parametrize("quoted", quoted_checks(), ids=lambda quoted: quoted[0])
def test_quoted_check_message_is_what_django_prints(quoted, settings):
    check_id, obj, message = quoted
    for name, value in CAUSES[check_id].items():
        if name == "SYNERISE":
            value = {**settings.SYNERISE, **value}
        setattr(settings, name, value)
    deploy = check_id in {"django_synerise.E037", "django_synerise.E038"}
    printed = {
        (message.id, message.obj, message.msg)
        for message in checks.run_checks(include_deployment_checks=deploy)
        if message.id == check_id
    }
    assert (check_id, obj, message) in printed
