"""No token fragment, password or provider token reaches a log record, str() or repr()."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.contrib.auth import authenticate
from django.utils import timezone

from django_synerise import services
from django_synerise.exceptions import LoginRequired, SyneriseError
from django_synerise.models import ClientToken
from tests.fixtures_services import (
    PASSWORD,
    add_client,
    fresh_breaker,  # noqa: F401
    jwt_fragments,
)

pytestmark = pytest.mark.django_db


class _Everything(logging.Handler):
    """Keep every record of every logger, formatted the way a real handler would."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))
        self.texts.append(repr(getattr(record, "__dict__", {})))


@pytest.fixture
def all_logs():
    handler = _Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("django_synerise", "urllib3", "django")]
    old = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for lg, level in old:
            lg.setLevel(level)


def _assert_clean(texts: list[str], secrets: list[str]) -> None:
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret not in blob, f"secret fragment {secret[:6]}... found in logs"


def test_login_and_refresh_flows_log_no_secrets(fake_synerise, all_logs, client):
    secrets: list[str] = [PASSWORD, fake_synerise.api_key]
    raised: list[str] = []

    # Email + password login, then a second login, the admin form and a wrong password.
    add_client(fake_synerise, "ann@example.com")
    result = services.login(email="ann@example.com", password=PASSWORD)
    secrets += jwt_fragments(result.token)
    again = services.login(email="ann@example.com", password=PASSWORD)
    secrets += jwt_fragments(again.token)
    assert authenticate(None, email="ann@example.com", password="Wrong-pa55word") is None
    secrets.append("Wrong-pa55word")
    client.post("/admin/login/", {"username": "ann@example.com", "password": PASSWORD})

    # Provider tokens: accepted and unknown.
    provider_token = fake_synerise.provider_token("GOOGLE", subject="g1", email="g@example.com")
    secrets.append(provider_token)
    social = services.login(identity_provider="GOOGLE", identity_provider_token=provider_token)
    secrets += jwt_fragments(social.token)
    secrets.append("fake-google-unknown-0123456789")
    assert authenticate(None, identity_provider="GOOGLE",
                        identity_provider_token="fake-google-unknown-0123456789") is None

    # Refresh: due token refreshed, transient failure, rejection, decryption failure.
    ClientToken.objects.filter(account=again.account).update(
        expires_at=timezone.now() + timedelta(seconds=300)
    )
    current = ClientToken.objects.select_related("account").get(account=again.account)
    secrets += jwt_fragments(current.get_token())  # the admin form stored a third token
    fake_synerise.inject(status=503, times=1, path="refresh")
    assert services.get_valid_token(again.user) == current.get_token()
    # The row now backs off (retry_at); let its retry time pass.
    ClientToken.objects.filter(account=again.account).update(retry_at=None)
    refreshed = services.get_valid_token(again.user)
    secrets += jwt_fragments(refreshed)
    row = ClientToken.objects.get(account=again.account)
    secrets.append(row.encrypted_token[:40])
    fake_synerise.revoke_client(again.account.client_id)
    ClientToken.objects.filter(pk=row.pk).update(
        expires_at=timezone.now() + timedelta(seconds=300)
    )
    with pytest.raises(LoginRequired) as info:
        services.get_valid_token(again.user)
    raised.append(str(info.value))
    raised.append(repr(info.value))

    ClientToken.objects.filter(account=social.account).update(encrypted_token="garbage-cipher")
    with pytest.raises(LoginRequired):
        services.get_valid_token(social.user)

    # Synerise down during login.
    fake_synerise.inject(status=503, times=1, path="login")
    with pytest.raises(SyneriseError) as down:
        services.login(email="ann@example.com", password=PASSWORD)
    raised += [str(down.value), repr(down.value)]

    services.logout(result.user)

    assert len(all_logs.texts) > 10  # the flows above did log
    _assert_clean(all_logs.texts + raised, secrets)


def test_str_and_repr_hide_tokens(fake_synerise):
    add_client(fake_synerise, "ann@example.com")
    result = services.login(email="ann@example.com", password=PASSWORD)
    row = ClientToken.objects.select_related("account").get(account=result.account)
    from django_synerise.client import get_client

    auth = get_client().login(email="ann@example.com", password=PASSWORD)
    prepared = services.prepare_token(result.account, auth)
    objects = [result, row, row.account, auth, prepared]
    texts = [str(o) for o in objects] + [repr(o) for o in objects]
    _assert_clean(texts, jwt_fragments(result.token) + jwt_fragments(auth.token) + [PASSWORD])
    assert prepared.ciphertext not in repr(prepared)
