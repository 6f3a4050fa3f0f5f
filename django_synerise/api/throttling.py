"""Login throttles: fixed-window counters keyed by client IP and by normalised account key.

Rates come from ``SYNERISE["LOGIN_THROTTLE_RATES"]`` (``{"ip": "30/min", "account": "10/min"}``;
``None`` disables a scope). Counting uses ``cache.add`` + ``cache.incr``, which are atomic on
Redis, Memcached and the local-memory cache, so concurrent attempts cannot slip past the limit
the way DRF's read-modify-write history list can. Every attempt counts, valid or not.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import unicodedata
from typing import Any

from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from ..conf import synerise_settings

__all__ = [
    "LoginAccountThrottle",
    "LoginIPThrottle",
    "LoginThrottle",
    "account_key",
    "client_ip",
    "parse_rate",
]

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """Parse ``"<n>/<period>"`` (period s, sec, m, min, h, hour, d, day; DRF syntax).

    Returns ``(num_requests, duration_seconds)`` or ``None`` when ``rate`` is ``None``.

    :raises ValueError: the rate is malformed.
    """
    if rate is None:
        return None
    num, _, period = str(rate).partition("/")
    if not num.strip().isdigit() or not period.strip():
        raise ValueError(f"Invalid throttle rate: {rate!r}")
    duration = _PERIODS.get(period.strip()[0].lower())
    if duration is None:
        raise ValueError(f"Invalid throttle rate: {rate!r}")
    return int(num), duration


def client_ip(request: Request) -> str:
    """Return the client address: ``REMOTE_ADDR`` unless DRF's ``NUM_PROXIES`` says how many
    trusted proxies append to ``X-Forwarded-For``.

    Unlike DRF's ``get_ident``, ``NUM_PROXIES = None`` (DRF's default) means *no* trusted
    proxy: a client-supplied ``X-Forwarded-For`` is never believed.
    """
    remote_addr = request.META.get("REMOTE_ADDR") or ""
    num_proxies = api_settings.NUM_PROXIES or 0
    xff = request.headers.get("x-forwarded-for")
    if num_proxies <= 0 or not xff:
        return remote_addr
    addrs = [part.strip() for part in xff.split(",")]
    return addrs[-min(num_proxies, len(addrs))] or remote_addr


def account_key(data: Any) -> str | None:
    """Return the normalised account identifier of a login body, or ``None``.

    The e-mail is NFKC-normalised, stripped and case-folded, so ``Alice@Example.com `` and
    ``alice@example.com`` share one counter; a ``custom_id`` is stripped. Non-string values
    give ``None`` (validation rejects them anyway).
    """
    if not isinstance(data, dict):
        return None
    email = data.get("email")
    if isinstance(email, str) and email.strip():
        return "email:" + unicodedata.normalize("NFKC", email).strip().casefold()
    custom_id = data.get("custom_id")
    if isinstance(custom_id, str) and custom_id.strip():
        return "custom_id:" + custom_id.strip()
    return None


class LoginThrottle(BaseThrottle):
    """Base of the login throttles: ``scope`` names the ``LOGIN_THROTTLE_RATES`` entry and
    :meth:`get_ident` the counter (``None`` = this scope does not apply to the request)."""

    scope: str = ""
    cache_alias = "default"
    key_prefix = "synerise:throttle"

    def __init__(self) -> None:
        self._wait: float | None = None

    def get_rate(self) -> tuple[int, int] | None:
        """Return the parsed rate of :attr:`scope` from the live settings (``None`` = off)."""
        rates = synerise_settings.LOGIN_THROTTLE_RATES or {}
        return parse_rate(rates.get(self.scope))

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        """Count this request; return ``False`` once the window's limit is exceeded."""
        rate = self.get_rate()
        if rate is None:
            return True
        ident = self.get_ident(request)
        if not ident:
            return True
        num_requests, duration = rate
        now = time.time()
        window = int(now // duration)
        digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        key = f"{self.key_prefix}:{self.scope}:{digest}:{window}"
        cache = caches[self.cache_alias]
        cache.add(key, 0, timeout=duration + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, timeout=duration + 1)
            count = 1
        if count <= num_requests:
            return True
        self._wait = (window + 1) * duration - now
        logger.info("Login throttle %r exceeded", self.scope)
        return False

    def wait(self) -> float | None:
        """Seconds until the current window ends (``Retry-After``)."""
        return None if self._wait is None else max(1.0, math.ceil(self._wait))


class LoginIPThrottle(LoginThrottle):
    """Counts login attempts per client IP (see :func:`client_ip`)."""

    scope = "ip"

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        return client_ip(request) or None


class LoginAccountThrottle(LoginThrottle):
    """Counts login attempts per normalised e-mail / custom id (see :func:`account_key`),
    whatever address they come from."""

    scope = "account"

    def get_ident(self, request: Request) -> str | None:  # type: ignore[override]
        return account_key(request.data)
