"""Live, typed view of the ``SYNERISE`` settings dict.

Every key has a default except ``API_KEY``. Values are read from ``settings.SYNERISE`` on
every access, so ``override_settings(SYNERISE={...})`` just works in tests. Each key of
:data:`DEFAULTS` is a typed property of :class:`SyneriseSettings` that converts the value
once (with :mod:`django_synerise.conversions`), so call sites use it as it comes. Unknown
names raise :class:`AttributeError`; unknown keys in the user's dict are reported by the
system check ``django_synerise.E002``.

The properties convert, they never validate: a value out of range or not among the allowed
choices is returned as it is, and a value of the wrong type raises the same ``TypeError`` or
``ValueError`` its call sites' own ``float()``/``int()`` raised before. Reporting bad values
is the job of the system checks (:mod:`django_synerise.checks`), which read the raw values
through :meth:`SyneriseSettings.raw`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conversions import timeout_pair, to_float, to_int, to_seconds, to_str_list

#: Defaults of every key; the docs list each with its meaning and check id.
DEFAULTS: dict[str, Any] = {
    # Synerise API
    "API_KEY": None,
    "BASE_URL": "https://api.synerise.com",
    "API_VERSION": "4.4",
    "AUTH_API": "v3",
    "TIMEOUT": (3.05, 10),
    "TOTAL_TIMEOUT": 12.0,
    "MAX_RESPONSE_BYTES": 64 * 1024,
    # Token verification
    "PUBLIC_KEY": None,
    "VERIFY_SIGNATURE": True,
    "JWT_ALGORITHMS": ["RS512"],
    "JWT_ISSUER": "Synerise",
    "JWT_LEEWAY": 30,
    "MAX_TOKEN_BYTES": 8192,  # nosec B105
    "BUSINESS_PROFILE_ID": None,
    "MAX_TOKEN_LIFETIME": 24 * 3600,
    # Token lifecycle
    "REFRESH_MARGIN": 900,
    "REFRESH_JITTER": 300,
    "KEEPALIVE_IDLE": 14 * 24 * 3600,
    "LEASE_SECONDS": 60,
    "SINGLE_FLIGHT_WAIT": 5.0,
    "ACTIVITY_INTERVAL": 60,
    "SUPERSEDED_TOKEN_GRACE": None,
    "REFRESH_BATCH_SIZE": 100,
    "REFRESH_CONCURRENCY": 8,
    "REFRESH_RATE_LIMIT": None,
    "REFRESH_RATE_LIMIT_CACHE": "default",
    "REFRESH_FLUSH_INTERVAL": 0.25,
    "RETRY_AFTER_MAX": 300,
    "HALT_PROBE_MAX": 30,
    "PURGE_AFTER": 7 * 24 * 3600,
    # Security
    "TOKEN_ENCRYPTION_KEYS": [],
    "LINK_BY_EMAIL": False,
    "UPSTREAM_PASSWORDS": "non_local",
    # Client flow: conditional login, web tracking
    "CONDITIONAL_LOGIN": False,
    "TRACKER_KEY": None,
    "TRACKER_DOMAIN": "https://web.snrbox.com",
    "TRACKER_UUID_COOKIE": True,
    "WEB_SDK_SIGNING_KEY": None,
    "WEB_SDK_TOKEN_LIFETIME": 600,
    # Circuit breaker
    "BREAKER_THRESHOLD": 5,
    "BREAKER_RESET_TIMEOUT": 30,
    "BREAKER_SLOW_CALL_THRESHOLD": 5.0,
    # Interactive calls (logins, refreshes a request waits for)
    "INTERACTIVE_CONCURRENCY": 4,
    # HTTP API
    "LOGIN_STARTS_SESSION": True,
    "LOGIN_THROTTLE_RATES": {"ip": "30/min", "account_ip": "10/min", "account": "100/hour"},
    "LOGIN_THROTTLE_CACHE": "default",
    # Identity provider (Synerise OAUTH: this site vouches for its users)
    "OAUTH_SIGNING_KEYS": [],
    "OAUTH_ISSUER": None,
    "OAUTH_AUDIENCE": None,
    "OAUTH_TOKEN_LIFETIME": 300,
    "CONNECT_ON_LOGIN": False,
    # Extension points
    "ADAPTER": "django_synerise.adapter.DefaultSyneriseAdapter",
}

#: Keys whose value is a dotted import path.
IMPORT_STRINGS: frozenset[str] = frozenset({"ADAPTER"})


class SyneriseSettings:
    """Typed attribute access to ``settings.SYNERISE`` merged over :data:`DEFAULTS`.

    Nothing is cached: each attribute read looks at the current Django settings. Numbers of
    seconds are floats (a ``timedelta`` is accepted too), counts and sizes ints, flags bools.
    """

    def user_settings(self) -> Mapping[str, Any]:
        """Return the raw ``SYNERISE`` dict (empty when unset or not a mapping)."""
        value = getattr(settings, "SYNERISE", None)
        if type(value) is dict:  # the usual case, without the ABC check (read on every call)
            return value
        return value if isinstance(value, Mapping) else {}

    def raw(self, name: str) -> Any:
        """Return the unconverted value of ``name`` (the user's, else the default).

        :raises KeyError: ``name`` is not a key of :data:`DEFAULTS`.
        """
        return self.user_settings().get(name, DEFAULTS[name])

    def import_setting(self, name: str) -> Any:
        """Return the object a dotted-path key names (a non-string value is returned as is).

        :raises AttributeError: ``name`` is not a key of :data:`DEFAULTS`.
        :raises ImproperlyConfigured: naming the key when the path cannot be imported.
        """
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid SYNERISE setting: {name!r}")
        path = self.raw(name)
        if not isinstance(path, str):
            return path
        try:
            return import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"SYNERISE[{name!r}] = {path!r} could not be imported: {exc}"
            ) from exc

    # ------------------------------------------------------------------ Synerise API

    @property
    def API_KEY(self) -> str | None:  # noqa: N802
        """The Profile API key; ``None`` when unset (or not a string)."""
        value = self.user_settings().get("API_KEY")
        return value if isinstance(value, str) else None

    @property
    def BASE_URL(self) -> str:  # noqa: N802
        """Scheme and host, without a trailing slash."""
        return str(self.raw("BASE_URL")).rstrip("/")

    @property
    def API_VERSION(self) -> str:  # noqa: N802
        return str(self.raw("API_VERSION"))

    @property
    def AUTH_API(self) -> str:  # noqa: N802
        """``"v3"`` or ``"v2"`` when valid (the client refuses anything else)."""
        return str(self.raw("AUTH_API"))

    @property
    def TIMEOUT(self) -> tuple[float, float]:  # noqa: N802
        """``(connect, read)`` seconds (a single number means both)."""
        return timeout_pair(self.raw("TIMEOUT"))

    @property
    def connect_timeout(self) -> float:
        """Connect part of ``TIMEOUT``."""
        return self.TIMEOUT[0]

    @property
    def read_timeout(self) -> float:
        """Read part of ``TIMEOUT``."""
        return self.TIMEOUT[1]

    @property
    def TOTAL_TIMEOUT(self) -> float:  # noqa: N802
        return to_seconds(self.raw("TOTAL_TIMEOUT"))

    @property
    def MAX_RESPONSE_BYTES(self) -> int:  # noqa: N802
        return to_int(self.raw("MAX_RESPONSE_BYTES"))

    # ------------------------------------------------------------------ token verification

    @property
    def PUBLIC_KEY(self) -> str | None:  # noqa: N802
        """PEM text of Synerise's public key (``bytes`` are decoded); ``None`` when unset."""
        value = self.raw("PUBLIC_KEY")
        if not value:
            return None
        return value.decode("ascii") if isinstance(value, bytes) else str(value)

    @property
    def VERIFY_SIGNATURE(self) -> bool:  # noqa: N802
        return bool(self.raw("VERIFY_SIGNATURE"))

    @property
    def JWT_ALGORITHMS(self) -> list[str]:  # noqa: N802
        """Algorithm names (a lone string counts as one)."""
        return to_str_list(self.raw("JWT_ALGORITHMS"), encoding="ascii")

    @property
    def JWT_ISSUER(self) -> str | None:  # noqa: N802
        value = self.raw("JWT_ISSUER")
        return None if value is None else str(value)

    @property
    def JWT_LEEWAY(self) -> float:  # noqa: N802
        return to_seconds(self.raw("JWT_LEEWAY"))

    @property
    def MAX_TOKEN_BYTES(self) -> int:  # noqa: N802
        return to_int(self.raw("MAX_TOKEN_BYTES"))

    @property
    def BUSINESS_PROFILE_ID(self) -> str | None:  # noqa: N802
        """The configured business profile id as a string; ``None`` when unset or blank."""
        value = self.raw("BUSINESS_PROFILE_ID")
        return None if value is None or value == "" else str(value)

    @property
    def MAX_TOKEN_LIFETIME(self) -> float:  # noqa: N802
        return to_seconds(self.raw("MAX_TOKEN_LIFETIME"))

    # ------------------------------------------------------------------ token lifecycle

    @property
    def REFRESH_MARGIN(self) -> float:  # noqa: N802
        return to_seconds(self.raw("REFRESH_MARGIN"))

    @property
    def REFRESH_JITTER(self) -> float:  # noqa: N802
        return to_seconds(self.raw("REFRESH_JITTER"))

    @property
    def KEEPALIVE_IDLE(self) -> float:  # noqa: N802
        return to_seconds(self.raw("KEEPALIVE_IDLE"))

    @property
    def LEASE_SECONDS(self) -> float:  # noqa: N802
        return to_seconds(self.raw("LEASE_SECONDS"))

    @property
    def SINGLE_FLIGHT_WAIT(self) -> float:  # noqa: N802
        return to_seconds(self.raw("SINGLE_FLIGHT_WAIT"))

    @property
    def ACTIVITY_INTERVAL(self) -> float:  # noqa: N802
        return to_seconds(self.raw("ACTIVITY_INTERVAL"))

    @property
    def SUPERSEDED_TOKEN_GRACE(self) -> float | None:  # noqa: N802
        """Seconds; ``None`` means ``REFRESH_MARGIN + REFRESH_JITTER``."""
        value = self.raw("SUPERSEDED_TOKEN_GRACE")
        return None if value is None else to_seconds(value)

    @property
    def REFRESH_BATCH_SIZE(self) -> int:  # noqa: N802
        return to_int(self.raw("REFRESH_BATCH_SIZE"))

    @property
    def REFRESH_CONCURRENCY(self) -> int:  # noqa: N802
        return to_int(self.raw("REFRESH_CONCURRENCY"))

    @property
    def REFRESH_RATE_LIMIT(self) -> float | None:  # noqa: N802
        """Calls per second; ``None`` means no limit."""
        value = self.raw("REFRESH_RATE_LIMIT")
        return None if value is None else to_float(value)

    @property
    def REFRESH_RATE_LIMIT_CACHE(self) -> str:  # noqa: N802
        return str(self.raw("REFRESH_RATE_LIMIT_CACHE"))

    @property
    def REFRESH_FLUSH_INTERVAL(self) -> float:  # noqa: N802
        return to_seconds(self.raw("REFRESH_FLUSH_INTERVAL"))

    @property
    def RETRY_AFTER_MAX(self) -> float:  # noqa: N802
        return to_seconds(self.raw("RETRY_AFTER_MAX"))

    @property
    def HALT_PROBE_MAX(self) -> float:  # noqa: N802
        return to_seconds(self.raw("HALT_PROBE_MAX"))

    @property
    def PURGE_AFTER(self) -> float:  # noqa: N802
        return to_seconds(self.raw("PURGE_AFTER"))

    # ------------------------------------------------------------------ security

    @property
    def TOKEN_ENCRYPTION_KEYS(self) -> list[str]:  # noqa: N802
        """Fernet keys, newest first (a lone key counts as one; ``bytes`` are decoded)."""
        return to_str_list(self.raw("TOKEN_ENCRYPTION_KEYS"), encoding="ascii")

    @property
    def LINK_BY_EMAIL(self) -> bool:  # noqa: N802
        return bool(self.raw("LINK_BY_EMAIL"))

    @property
    def UPSTREAM_PASSWORDS(self) -> str:  # noqa: N802
        """``"linked"``, ``"non_local"``, ``"non_staff"`` or ``"all"`` when valid."""
        return str(self.raw("UPSTREAM_PASSWORDS"))

    # ------------------------------------------------------------------ client flow

    @property
    def CONDITIONAL_LOGIN(self) -> bool:  # noqa: N802
        return bool(self.raw("CONDITIONAL_LOGIN"))

    @property
    def TRACKER_KEY(self) -> str | None:  # noqa: N802
        """The tracker key; ``None`` when unset (or not a string)."""
        value = self.raw("TRACKER_KEY")
        return value if isinstance(value, str) else None

    @property
    def TRACKER_DOMAIN(self) -> str:  # noqa: N802
        return str(self.raw("TRACKER_DOMAIN"))

    @property
    def TRACKER_UUID_COOKIE(self) -> bool:  # noqa: N802
        return bool(self.raw("TRACKER_UUID_COOKIE"))

    @property
    def WEB_SDK_SIGNING_KEY(self) -> str | bytes | None:  # noqa: N802
        """PEM of the Web SDK signing key; ``None`` when unset (any other value as text)."""
        value = self.raw("WEB_SDK_SIGNING_KEY")
        if value is None or isinstance(value, (str, bytes)):
            return value
        return str(value)

    @property
    def WEB_SDK_TOKEN_LIFETIME(self) -> int:  # noqa: N802
        return to_int(self.raw("WEB_SDK_TOKEN_LIFETIME"))

    # ------------------------------------------------------------------ circuit breaker

    @property
    def BREAKER_THRESHOLD(self) -> int:  # noqa: N802
        return to_int(self.raw("BREAKER_THRESHOLD"))

    @property
    def BREAKER_RESET_TIMEOUT(self) -> float:  # noqa: N802
        return to_seconds(self.raw("BREAKER_RESET_TIMEOUT"))

    @property
    def BREAKER_SLOW_CALL_THRESHOLD(self) -> float | None:  # noqa: N802
        """Seconds; ``None`` counts failures only."""
        value = self.raw("BREAKER_SLOW_CALL_THRESHOLD")
        return None if value is None else to_seconds(value)

    @property
    def INTERACTIVE_CONCURRENCY(self) -> int:  # noqa: N802
        return to_int(self.raw("INTERACTIVE_CONCURRENCY"))

    # ------------------------------------------------------------------ HTTP API

    @property
    def LOGIN_STARTS_SESSION(self) -> bool:  # noqa: N802
        return bool(self.raw("LOGIN_STARTS_SESSION"))

    @property
    def LOGIN_THROTTLE_RATES(self) -> Mapping[str, object]:  # noqa: N802
        """Rate per scope (``"30/min"`` or ``None``); a non-mapping value reads as empty."""
        value = self.raw("LOGIN_THROTTLE_RATES")
        return value if isinstance(value, Mapping) else {}

    @property
    def LOGIN_THROTTLE_CACHE(self) -> str:  # noqa: N802
        return str(self.raw("LOGIN_THROTTLE_CACHE"))

    # ------------------------------------------------------------------ identity provider

    @property
    def OAUTH_SIGNING_KEYS(self) -> list[str]:  # noqa: N802
        """PEM private keys, the signing one first (a lone key counts as one)."""
        return to_str_list(self.raw("OAUTH_SIGNING_KEYS"), encoding="utf-8")

    @property
    def OAUTH_ISSUER(self) -> str | None:  # noqa: N802
        value = self.raw("OAUTH_ISSUER")
        return None if value is None else str(value)

    @property
    def OAUTH_AUDIENCE(self) -> str | None:  # noqa: N802
        value = self.raw("OAUTH_AUDIENCE")
        return None if value is None else str(value)

    @property
    def OAUTH_TOKEN_LIFETIME(self) -> int:  # noqa: N802
        return to_int(self.raw("OAUTH_TOKEN_LIFETIME"))

    @property
    def CONNECT_ON_LOGIN(self) -> bool:  # noqa: N802
        return bool(self.raw("CONNECT_ON_LOGIN"))

    # ------------------------------------------------------------------ extension points

    @property
    def ADAPTER(self) -> object:  # noqa: N802
        """The dotted path (or class) of the adapter; :meth:`import_setting` imports it."""
        return self.raw("ADAPTER")


synerise_settings = SyneriseSettings()
