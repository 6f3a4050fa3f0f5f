"""The login throttle: one budget of Synerise sign-in attempts shared by every way in.

:class:`~django_synerise.backends.SyneriseBackend` (the admin login form, Django's
``LoginView``, any form calling :func:`django.contrib.auth.authenticate`) and the HTTP API's
login endpoints all call :func:`check_attempt` before anything is sent to Synerise, so an
attacker cannot get more guesses by switching entry points.

Scopes (``SYNERISE["LOGIN_THROTTLE_RATES"]``, each ``"N/period"`` or ``None`` = off):

``ip``
    Every attempt from one client address, whatever the account (default ``30/min``).
``account_ip``
    Attempts on one account from one client address (default ``10/min``). The account is the
    identifier as typed, normalised by :func:`normalise_identifier` and *without* its kind, so
    an e-mail typed as ``email``, as ``custom_id`` or as the ``username`` of a Django form
    counts once.
``account``
    A ceiling on one account from every address together (default ``100/hour``), against
    guessing spread over many addresses. A client address that signed in to the account
    successfully in the last :data:`KNOWN_CLIENT_TTL` seconds is not held by this ceiling
    (only by ``ip`` and ``account_ip``), so an attacker elsewhere cannot lock the real user
    out of the devices they already use.

Counting is a sliding window: the period is cut into :data:`BUCKETS` buckets counted in
Django's cache (``SYNERISE["LOGIN_THROTTLE_CACHE"]``) with ``cache.add`` + ``cache.incr``, and
an attempt passes when the buckets covering the last period (plus the current bucket and the
next one) hold at most the limit. No interval of one period, wherever it starts, admits more
than the limit: there is no burst at a window boundary, and no extra pass for attempts racing
across one (see :meth:`SlidingWindow.hit`). Every attempt counts, refused ones included, so a
client that ignores ``Retry-After`` stays refused. A multi-process site needs a shared cache
with atomic increments (Redis or Memcached): the local-memory cache counts per process.

Counter keys are HMACs of the identifier and address (keyed by ``SECRET_KEY``): the cache never
holds an e-mail address. A failing cache never stops logins: the attempt passes and a warning
is logged (at most once a minute per process).
"""

from __future__ import annotations

import logging
import math
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.utils.crypto import salted_hmac
from rest_framework.settings import api_settings

from . import process_state
from .conf import DEFAULTS, synerise_settings

__all__ = [
    "AHEAD",
    "BUCKETS",
    "KNOWN_CLIENT_TTL",
    "SCOPES",
    "SlidingWindow",
    "Verdict",
    "check_attempt",
    "client_ip",
    "login_throttle_rates",
    "normalise_identifier",
    "parse_rate",
    "record_success",
]

logger = logging.getLogger(__name__)

#: Scopes in the order they are counted; the first refusal stops the count.
SCOPES = ("ip", "account_ip", "account")

#: Buckets a period is cut into (a bucket is a tenth of the period).
BUCKETS = 10

#: Buckets after the current one that an attempt also reads (see :meth:`SlidingWindow.hit`).
AHEAD = 1

#: Seconds a client address stays "known" for an account after a successful sign-in.
KNOWN_CLIENT_TTL = 30 * 24 * 3600

#: Prefix of every key the throttle writes.
KEY_PREFIX = "django_synerise:login"

#: Client address used when there is no request (code calling ``authenticate(None, ...)``).
NO_CLIENT = "-"

#: Seconds between two warnings about a failing cache (per process).
WARN_EVERY = 60.0

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_warnings = process_state.WarningGate("throttle.warnings", every=WARN_EVERY)


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


def login_throttle_rates() -> dict[str, tuple[int, int] | None]:
    """Return the parsed rate of every scope: ``LOGIN_THROTTLE_RATES`` over the defaults.

    A scope missing from the project's dict keeps its default; ``None`` turns it off.
    """
    configured = synerise_settings.LOGIN_THROTTLE_RATES
    merged: dict[str, Any] = dict(DEFAULTS["LOGIN_THROTTLE_RATES"])
    if isinstance(configured, Mapping):
        merged.update(configured)
    return {scope: parse_rate(merged.get(scope)) for scope in SCOPES}


def normalise_identifier(value: Any) -> str | None:
    """Return the throttle key of a typed e-mail, custom id or username, or ``None``.

    NFKC-normalised, stripped and case-folded, with no mention of its kind: ``Alice@Example.com``
    as ``email`` and ``alice@example.com`` as ``custom_id`` or ``username`` share one key.
    Non-strings and blanks give ``None``.
    """
    if not isinstance(value, str):
        return None
    normalised = unicodedata.normalize("NFKC", value).strip().casefold()
    return normalised or None


def client_ip(request: Any) -> str:
    """Return the client address of a Django or DRF request.

    ``REMOTE_ADDR``, unless DRF's ``NUM_PROXIES`` says how many trusted proxies append to
    ``X-Forwarded-For``. Unlike DRF's ``get_ident``, ``NUM_PROXIES = None`` (DRF's default)
    means *no* trusted proxy: a client-supplied ``X-Forwarded-For`` is never believed.
    """
    remote_addr = request.META.get("REMOTE_ADDR") or ""
    num_proxies = api_settings.NUM_PROXIES or 0
    xff = request.headers.get("x-forwarded-for")
    if num_proxies <= 0 or not xff:
        return remote_addr
    addrs = [part.strip() for part in xff.split(",")]
    return addrs[-min(num_proxies, len(addrs))] or remote_addr


@dataclass(frozen=True)
class Verdict:
    """Outcome of :func:`check_attempt`.

    ``allowed`` is ``False`` when a scope refused the attempt; ``scope`` names it and
    ``retry_after`` is the number of seconds until the attempt would pass (if no other attempt
    is made meanwhile).
    """

    allowed: bool
    scope: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class SlidingWindow:
    """At most ``limit`` attempts in any interval of ``period`` seconds, per key.

    Cheap to build (no I/O); :meth:`hit` is safe across threads and, with a shared cache whose
    ``incr`` is atomic (Redis, Memcached), across processes.
    """

    limit: int
    period: int
    cache_alias: str = "default"

    @property
    def width(self) -> float:
        """Seconds per bucket."""
        return self.period / BUCKETS

    def hit(self, key: str, now: float) -> float | None:
        """Count one attempt on ``key`` at ``now`` (seconds since the epoch).

        Returns ``None`` when the attempt is within the limit, else the seconds until one
        would be. The window checked is the current bucket, the :data:`BUCKETS` before it
        (which always cover the last ``period`` seconds) and the :data:`AHEAD` after it.

        Reading ahead is what makes concurrent attempts safe at a bucket boundary. Each
        attempt increments its own bucket, then reads the others. Of two attempts in buckets
        k and k + 1 (a process whose clock is behind by less than a bucket, or a thread
        delayed between reading the clock and counting), the one that reads last sees the
        other's increment, whichever it is. So the attempt incremented last sees every earlier
        one, and no more than ``limit`` pass. The price: during such a race, an attempt may
        also count one that was incremented after it, so the race can refuse an attempt that
        a sequential order would admit, never the reverse.
        """
        width = self.width
        current = math.floor(now / width)
        own = f"{key}:{current}"
        before = [f"{key}:{bucket}" for bucket in range(current - BUCKETS, current)]
        after = [f"{key}:{bucket}" for bucket in range(current + 1, current + AHEAD + 1)]
        cache = caches[self.cache_alias]
        timeout = math.ceil(width * (BUCKETS + AHEAD + 2))
        cache.add(own, 0, timeout=timeout)
        try:
            count = int(cache.incr(own))
        except ValueError:  # expired between add() and incr()
            cache.add(own, 1, timeout=timeout)
            count = 1
        read = cache.get_many(before + after)
        older = [int(read.get(k) or 0) for k in before] + [count]
        ahead = sum(int(read.get(k) or 0) for k in after)
        if sum(older) + ahead <= self.limit:
            return None
        # Bucket ``current - BUCKETS + i`` leaves the window at ``(current + i + 1) * width``:
        # find how many of the oldest must leave before one more attempt fits.
        dropped = next(
            (k for k in range(1, BUCKETS + 1) if sum(older[k:]) + ahead + 1 <= self.limit),
            BUCKETS + 1,
        )
        # A millisecond more, so that waiting exactly this long lands in the next bucket
        # whatever the float rounding.
        return max(0.0, (current + dropped) * width - now) + 0.001


def _digest(*parts: str) -> str:
    value = "\x00".join(parts)
    return salted_hmac("django_synerise.throttle", value, algorithm="sha256").hexdigest()[:40]


def _client(request: Any) -> str:
    if request is None:
        return NO_CLIENT
    return client_ip(request) or NO_CLIENT


def _known_key(account: str, client: str) -> str:
    return f"{KEY_PREFIX}:known:{_digest(account, client)}"


def check_attempt(
    request: Any,
    identifier: str | None,
    *,
    scopes: Iterable[str] = SCOPES,
    clock: Callable[[], float] = time.time,
) -> Verdict:
    """Count one sign-in attempt and say whether it may go to Synerise.

    :param request: the Django (or DRF) request, for the client address; ``None`` for code
        that has none (then the ``ip`` scope does not apply and the address counts as one
        unknown client).
    :param identifier: the e-mail, custom id or username typed, or ``None`` (provider-token
        logins: only the ``ip`` scope applies).
    :param scopes: the scopes to count (all by default).
    """
    rates = login_throttle_rates()
    alias = synerise_settings.LOGIN_THROTTLE_CACHE
    client = _client(request)
    account = normalise_identifier(identifier)
    wanted = set(scopes)
    plan: list[tuple[str, str]] = []
    if "ip" in wanted and request is not None:
        plan.append(("ip", _digest(client)))
    if account is not None:
        if "account_ip" in wanted:
            plan.append(("account_ip", _digest(account, client)))
        ceiling = "account" in wanted and rates["account"] is not None
        if ceiling and not _is_known(alias, account, client):
            plan.append(("account", _digest(account)))
    now = clock()
    for scope, digest in plan:
        rate = rates[scope]
        if rate is None:
            continue
        window = SlidingWindow(rate[0], rate[1], alias)
        try:
            wait = window.hit(f"{KEY_PREFIX}:{scope}:{digest}", now)
        except Exception as exc:  # noqa: BLE001 - a broken cache never stops logins
            _warn_cache_failure(alias, exc)
            return Verdict(True)
        if wait is not None:
            logger.info("Login throttle %r exceeded", scope)
            return Verdict(False, scope, wait)
    return Verdict(True)


def record_success(request: Any, identifier: str | None) -> None:
    """Remember that the client of ``request`` signed in to ``identifier``'s account, so the
    ``account`` ceiling does not hold it for :data:`KNOWN_CLIENT_TTL` seconds."""
    account = normalise_identifier(identifier)
    if account is None or login_throttle_rates()["account"] is None:
        return
    alias = synerise_settings.LOGIN_THROTTLE_CACHE
    try:
        caches[alias].set(_known_key(account, _client(request)), 1, timeout=KNOWN_CLIENT_TTL)
    except Exception as exc:  # noqa: BLE001
        _warn_cache_failure(alias, exc)


def _is_known(alias: str, account: str, client: str) -> bool:
    try:
        return bool(caches[alias].get(_known_key(account, client)))
    except Exception as exc:  # noqa: BLE001
        _warn_cache_failure(alias, exc)
        return False


def _warn_cache_failure(alias: str, exc: BaseException) -> None:
    if not _warnings.allow():
        return
    logger.warning(
        "LOGIN_THROTTLE_CACHE: cache %r failed (%s); login attempts are not throttled",
        alias,
        type(exc).__name__,
    )
