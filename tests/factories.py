"""Fixture factories for users, Synerise accounts and stored client tokens (no HTTP, no mocks).

Stable API for every test module::

    user = make_user()                                   # unique username/email, active
    account = make_account(user)                         # unique numeric client_id
    token = make_token(account, token="a.b.c", expires_in=3600)

``make_token`` writes the row directly through the model (encrypted under the current keys);
it does not call Synerise. For a token FakeSynerise will accept, pass
``token=fake.issue_token(account.client_id)``.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from django_synerise.conf import synerise_settings
from django_synerise.models import ClientToken, IdentityProvider, SyneriseAccount, TokenStatus

_seq = itertools.count(1)

_UNSET: Any = object()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def fake_jwt(client_id: str = "1", *, exp: int | None = None) -> str:
    """Return a unique JWT-shaped string (3 base64url segments, random signature; not signed)."""
    header = _b64(json.dumps({"alg": "RS512", "typ": "JWT"}).encode())
    claims = {"clId": int(client_id) if str(client_id).isdigit() else client_id,
              "jti": secrets.token_hex(8), "exp": exp or 0}
    payload = _b64(json.dumps(claims).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(64))}"


def make_user(username: str | None = None, *, email: str | None = None,
              password: str | None = None, is_active: bool = True, **extra: Any) -> Any:
    """Create and return a user of ``AUTH_USER_MODEL`` with a unique username and email."""
    n = next(_seq)
    user_model = get_user_model()
    username = username or f"user{n}"
    fields: dict[str, Any] = {user_model.USERNAME_FIELD: username, "is_active": is_active}
    email_field = user_model.get_email_field_name()
    if any(f.name == email_field for f in user_model._meta.get_fields()):
        fields[email_field] = email if email is not None else f"{username}@example.com"
    fields.update(extra)
    user = user_model(**fields)
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    user.save()
    return user


def make_account(user: Any = None, *, client_id: str | None = None, email: str | None = None,
                 identity_provider: str = IdentityProvider.SYNERISE, **extra: Any
                 ) -> SyneriseAccount:
    """Create and return a :class:`SyneriseAccount` (creates a user when ``user`` is None)."""
    user = user or make_user()
    n = next(_seq)
    return SyneriseAccount.objects.create(
        user=user,
        client_id=client_id or str(100000 + n),
        email=email if email is not None else (getattr(user, "email", "") or ""),
        identity_provider=identity_provider,
        **extra,
    )


def make_token(account: SyneriseAccount | None = None, *, token: str | None = None,
               expires_in: float = 3600, status: str = TokenStatus.ACTIVE,
               refresh_at: datetime | None = None, last_used_at: Any = _UNSET,
               now: datetime | None = None, **extra: Any) -> ClientToken:
    """Create and return the stored :class:`ClientToken` of ``account``.

    ``token`` defaults to :func:`fake_jwt`; the plaintext is kept on the instance as
    ``plaintext`` (a test convenience, not a model field). ``expires_in`` is seconds from
    ``now`` (negative for an expired token). ``refresh_at`` defaults to
    ``expires_at - REFRESH_MARGIN`` (no jitter). ``last_used_at`` defaults to ``now``.
    """
    account = account or make_account()
    now = now or timezone.now()
    expires_at = now + timedelta(seconds=expires_in)
    if refresh_at is None:
        refresh_at = expires_at - timedelta(seconds=float(synerise_settings.REFRESH_MARGIN))
    plaintext = token or fake_jwt(account.client_id, exp=int(expires_at.timestamp()))
    row = ClientToken(
        account=account,
        expires_at=expires_at,
        refresh_at=refresh_at,
        issued_at=now,
        status=status,
        last_used_at=now if last_used_at is _UNSET else last_used_at,
        **extra,
    )
    row.set_token(plaintext)
    row.save()
    row.plaintext = plaintext
    return row


def raw_ciphertext(pk: int) -> str:
    """The ``encrypted_token`` column of a ``ClientToken`` row, read with SQL (no ORM)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT encrypted_token FROM django_synerise_clienttoken WHERE id = %s", [pk]
        )
        return cursor.fetchone()[0]
