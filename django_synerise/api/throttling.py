"""DRF throttles of the login endpoints, counted by the shared login throttle.

The counting itself lives in :mod:`django_synerise.throttle`, which
:class:`~django_synerise.backends.SyneriseBackend` uses too: the API, the admin login form
and any Django login form draw on one budget per client address and per account. These
classes only adapt it to DRF (``allow_request`` / ``wait``; a refusal answers 429 with
``Retry-After``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from .. import throttle
from ..throttle import client_ip, parse_rate

__all__ = [
    "LoginAccountThrottle",
    "LoginIPThrottle",
    "LoginThrottle",
    "account_key",
    "client_ip",
    "parse_rate",
]

logger = logging.getLogger(__name__)


def account_key(data: Any) -> str | None:
    """Return the throttle key of a login body's account, or ``None``.

    The ``email`` (or, without one, the ``custom_id``) normalised by
    :func:`django_synerise.throttle.normalise_identifier`: ``Alice@Example.com `` as an
    e-mail and ``alice@example.com`` as a custom id share one key, as they do when typed as
    the username of a Django login form. Non-string values give ``None`` (validation rejects
    them anyway).
    """
    if not isinstance(data, dict):
        return None
    for field in ("email", "custom_id"):
        key = throttle.normalise_identifier(data.get(field))
        if key is not None:
            return key
    return None


class LoginThrottle(BaseThrottle):
    """Count a login request in the shared login throttle (every scope in :attr:`scopes`).

    The account is read from the body with :func:`account_key`; provider-token logins have
    none, so only the ``ip`` scope applies to them.
    """

    scopes: ClassVar[tuple[str, ...]] = throttle.SCOPES

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: APIView | None) -> bool:
        """Count this request; return ``False`` once a scope's limit is exceeded."""
        verdict = throttle.check_attempt(request, account_key(request.data), scopes=self.scopes)
        self._wait = verdict.retry_after
        return verdict.allowed

    def wait(self) -> float | None:
        """Seconds until the attempt would pass (``Retry-After``), at least 1."""
        return None if self._wait is None else max(1.0, math.ceil(self._wait))


class LoginIPThrottle(LoginThrottle):
    """Only the ``ip`` scope: attempts per client address (see :func:`client_ip`)."""

    scopes = ("ip",)


class LoginAccountThrottle(LoginThrottle):
    """Only the account scopes: ``account_ip`` and the ``account`` ceiling."""

    scopes = ("account_ip", "account")
