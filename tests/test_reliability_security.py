"""Reliability: security settings (C1-C3 on a production profile, X25 key removed, X26 half-rolled
rotation) and the production-like settings module passing ``check --deploy``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_synerise import services, signals
from django_synerise.exceptions import LoginRequired
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.services.refresh import claim_due_tokens, refresh_batch
from tests import settings_prod
from tests.fixtures_refresh import refresh_calls, seed_token
from tests.fixtures_services import capture, fresh_breaker, synerise_settings  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
KEY_OLD = Fernet.generate_key().decode()
KEY_NEW = Fernet.generate_key().decode()

#: Settings of the production profile that matter to ``check --deploy`` (no database; the
#: cache configuration is checked, never contacted).
_PROD_NAMES = [
    name for name in dir(settings_prod) if name.isupper() and name not in {"DATABASES", "LOGGING"}
]


def prod_settings(**overrides: Any) -> dict[str, Any]:
    """The production profile with ``overrides`` (``SYNERISE`` keys merged into its dict)."""
    values = {name: getattr(settings_prod, name) for name in _PROD_NAMES}
    values["SYNERISE"] = {**values["SYNERISE"], **overrides.pop("SYNERISE", {})}
    values.update(overrides)
    return values


def deploy_check(**overrides: Any) -> str:
    """Run ``check --deploy --fail-level WARNING`` in-process on the profile; return output."""
    from io import StringIO

    out, err = StringIO(), StringIO()
    with override_settings(**prod_settings(**overrides)):
        call_command("check", "--deploy", "--fail-level", "WARNING", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


# --------------------------------------------------------------------------- check --deploy


def test_check_deploy_is_clean_for_settings_prod_in_a_fresh_process() -> None:
    """The CI command itself: no message at all, exit status 0."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            "--settings=tests.settings_prod",
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_in_process_profile_is_clean() -> None:
    assert "no issues" in deploy_check()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        # C1: encryption keys
        pytest.param(
            {"SYNERISE": {"TOKEN_ENCRYPTION_KEYS": []}}, "django_synerise.E037", id="C1-empty-keys"
        ),
        pytest.param(
            {"SYNERISE": {"TOKEN_ENCRYPTION_KEYS": ["not-a-fernet-key"]}},
            "django_synerise.E029",
            id="C1-malformed-key",
        ),
        pytest.param(
            {"SYNERISE": {"TOKEN_ENCRYPTION_KEYS": [settings_prod.SECRET_KEY]}},
            "django_synerise.E030",
            id="C1-key-is-secret-key",
        ),
        # C2: JWT algorithms
        pytest.param(
            {"SYNERISE": {"JWT_ALGORITHMS": ["none"]}}, "django_synerise.E014", id="C2-alg-none"
        ),
        pytest.param(
            {"SYNERISE": {"JWT_ALGORITHMS": ["HS256", "RS256"]}},
            "django_synerise.E014",
            id="C2-hs-mixed-with-rs",
        ),
        # C3: transport and Celery
        pytest.param(
            {"SYNERISE": {"BASE_URL": "http://api.synerise.com"}},
            "django_synerise.E038",
            id="C3-http-base-url",
        ),
        pytest.param({"SYNERISE": {"TIMEOUT": None}}, "django_synerise.E008", id="C3-timeout-none"),
        pytest.param(
            {"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 600}},
            "django_synerise.E041",
            id="C3-visibility-not-above-time-limit",
        ),
        # C4: the login throttle counts per process
        pytest.param(
            {"CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}},
            "django_synerise.W073",
            id="C4-locmem-login-throttle",
        ),
        # Django's own deploy checks still bite on the same profile
        pytest.param({"DEBUG": True}, "security.W018", id="debug-on"),
        pytest.param(
            {"SESSION_COOKIE_SECURE": False}, "security.W012", id="insecure-session-cookie"
        ),
    ],
)
def test_each_bad_setting_fails_check_deploy(overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(SystemCheckError) as info:
        deploy_check(**overrides)
    assert code in str(info.value), str(info.value)


def test_key_equal_to_secret_key_is_reported_as_derived() -> None:
    """A valid Fernet key used as SECRET_KEY too is still refused (E030)."""
    key = Fernet.generate_key().decode()
    with pytest.raises(SystemCheckError, match=r"django_synerise\.E030"):
        deploy_check(
            SECRET_KEY=key + "-" * 20 + "padding-to-fifty",
            SECRET_KEY_FALLBACKS=[key],
            SYNERISE={"TOKEN_ENCRYPTION_KEYS": [key]},
        )


# --------------------------------------------------------------------------- X25 key removed


@pytest.fixture
def fake(fake_synerise: Any, settings: Any) -> Any:
    synerise_settings(
        settings,
        TOKEN_ENCRYPTION_KEYS=[KEY_NEW, KEY_OLD],
        REFRESH_CONCURRENCY=4,
        TIMEOUT=(1, 3),
        TOTAL_TIMEOUT=5,
    )
    return fake_synerise


@pytest.mark.django_db
def test_x25_key_removed_on_a_worker_fails_closed_and_sends_nothing(
    fake: Any, settings: Any
) -> None:
    rows = [seed_token(fake) for _ in range(4)]
    before = {r.pk: ClientToken.objects.get(pk=r.pk).encrypted_token for r in rows}
    # Bad rollout: this worker lost the key every row is encrypted with.
    synerise_settings(settings, TOKEN_ENCRYPTION_KEYS=[KEY_OLD])
    with capture(signals.token_expired) as expired:
        report = refresh_batch(claim_due_tokens())

    assert sorted(report.needs_login) == sorted(r.pk for r in rows)
    assert refresh_calls(fake) == [], "no ciphertext or garbage may reach Synerise"
    assert fake.requests == []
    for row in rows:
        stored = ClientToken.objects.get(pk=row.pk)
        assert stored.status == TokenStatus.NEEDS_LOGIN
        assert stored.last_error == "decryption_failed"
        assert stored.encrypted_token == before[row.pk], "ciphertext kept for recovery"
    assert sorted(c["reason"] for c in expired) == ["decryption_failed"] * 4


@pytest.mark.django_db
def test_x25_key_removed_get_valid_token_is_login_required_without_upstream(
    fake: Any, settings: Any
) -> None:
    row = seed_token(fake, lifetime=600)  # inside the margin: would refresh
    synerise_settings(settings, TOKEN_ENCRYPTION_KEYS=[Fernet.generate_key().decode()])
    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(row.account.user)
    assert info.value.reason == "decryption_failed"
    assert fake.requests == []
    assert ClientToken.objects.get(pk=row.pk).status == TokenStatus.NEEDS_LOGIN


def test_x25_empty_key_list_fails_the_deploy_check_at_startup() -> None:
    with pytest.raises(SystemCheckError, match=r"django_synerise\.E037"):
        deploy_check(SYNERISE={"TOKEN_ENCRYPTION_KEYS": []})


# --------------------------------------------------------------------------- X26 half-rolled


@pytest.mark.django_db
def test_x26_half_rolled_rotation_every_row_readable_and_refreshed_by_both_profiles(
    fake: Any, settings: Any
) -> None:
    """Workers with [old, new] and [new, old] refresh in turns: nothing fails closed."""
    old_profile, new_profile = [KEY_OLD, KEY_NEW], [KEY_NEW, KEY_OLD]
    synerise_settings(settings, TOKEN_ENCRYPTION_KEYS=old_profile)
    rows = [seed_token(fake) for _ in range(6)]
    for rounds, profile in enumerate([new_profile, old_profile, new_profile]):
        synerise_settings(settings, TOKEN_ENCRYPTION_KEYS=profile)
        for token in ClientToken.objects.select_related("account"):
            assert token.get_token()  # readable on this profile
        ClientToken.objects.update(refresh_at=ClientToken.objects.first().created_at)
        report = refresh_batch(claim_due_tokens())
        assert sorted(report.refreshed) == sorted(r.pk for r in rows), rounds
        assert not report.needs_login
    for profile in (old_profile, new_profile):
        synerise_settings(settings, TOKEN_ENCRYPTION_KEYS=profile)
        for token in ClientToken.objects.select_related("account"):
            assert fake.token_info(token.get_token())["valid"]
    assert set(ClientToken.objects.values_list("status", "version")) == {(TokenStatus.ACTIVE, 4)}
    # Phase 3 (old key dropped) is safe only after rows are re-encrypted: the last
    # refresh ran on new_profile, so every row now decrypts with the new key alone.
    synerise_settings(settings, TOKEN_ENCRYPTION_KEYS=[KEY_NEW])
    assert all(t.get_token() for t in ClientToken.objects.select_related("account"))
