"""Live, typed view of the ``SYNERISE`` settings dict.

Every key has a default except ``API_KEY``. Values are read from ``settings.SYNERISE`` on
every access, so ``override_settings(SYNERISE={...})`` just works in tests. Unknown names
raise :class:`AttributeError`; unknown keys in the user's dict are reported by the system
check ``django_synerise.E002``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

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
    """Attribute access to ``settings.SYNERISE`` merged over :data:`DEFAULTS`.

    Nothing is cached: each attribute read looks at the current Django settings.
    """

    def user_settings(self) -> Mapping[str, Any]:
        """Return the raw ``SYNERISE`` dict (empty when unset or not a mapping)."""
        value = getattr(settings, "SYNERISE", None)
        return value if isinstance(value, Mapping) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid SYNERISE setting: {name!r}")
        return self.user_settings().get(name, DEFAULTS[name])

    def import_setting(self, name: str) -> Any:
        """Return the object a dotted-path key names.

        :raises ImproperlyConfigured: naming the key when the path cannot be imported.
        """
        path = getattr(self, name)
        if not isinstance(path, str):
            return path
        try:
            return import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"SYNERISE[{name!r}] = {path!r} could not be imported: {exc}"
            ) from exc

    @property
    def API_KEY(self) -> str | None:  # noqa: N802
        return self.user_settings().get("API_KEY")

    @property
    def BASE_URL(self) -> str:  # noqa: N802
        url = self.user_settings().get("BASE_URL", DEFAULTS["BASE_URL"])
        return str(url).rstrip("/")

    @property
    def connect_timeout(self) -> float:
        """Connect part of ``TIMEOUT`` (a number means both connect and read)."""
        return _timeout_pair(self.TIMEOUT)[0]

    @property
    def read_timeout(self) -> float:
        """Read part of ``TIMEOUT``."""
        return _timeout_pair(self.TIMEOUT)[1]


def _timeout_pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    connect, read = value
    return float(connect), float(read)


synerise_settings = SyneriseSettings()
