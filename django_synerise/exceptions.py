"""Typed errors raised by django-synerise.

Each class carries a stable ``default_code`` (used as the ``code`` of HTTP error bodies) and
the data a caller needs to react, in the style of DRF's ``APIException``. No exception ever
holds a token, a password or the API key in its message.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldErrorDetail:
    """One entry of a Spring-style ``errors`` list (``field``, ``message``, ``code``).

    Formerly ``FieldError`` (deprecated alias for one release).
    """

    field: str | None
    message: str
    code: str | int | None = None


class SyneriseError(Exception):
    """Base class of every error raised by this package."""

    default_code = "synerise_error"
    default_message = "Synerise error."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        super().__init__(self.message)


class SyneriseConfigurationError(SyneriseError):
    """Settings are missing or invalid (see the system checks)."""

    default_code = "synerise_misconfigured"
    default_message = "django-synerise is not configured correctly."


# --------------------------------------------------------------------------- upstream


class UpstreamError(SyneriseError):
    """Calling Synerise failed. ``status`` is the HTTP status when one was received.

    ``error``/``error_code``/``path`` echo the Spring-style error body fields when present;
    they are for logs and diagnostics, never passed on to API clients.
    """

    default_code = "upstream_error"
    default_message = "Synerise request failed."

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        error: str | None = None,
        error_code: str | None = None,
        path: str | None = None,
        field_errors: list[FieldErrorDetail] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.error = error
        self.error_code = error_code
        self.path = path
        self.field_errors = list(field_errors or [])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class TransientUpstreamError(UpstreamError):
    """A failure that may succeed later: retry with backoff (``retry_after`` seconds if known)."""

    default_code = "synerise_unavailable"
    default_message = "Synerise is unavailable."

    def __init__(
        self, message: str | None = None, *, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class SyneriseUnavailable(TransientUpstreamError):
    """5xx, timeout, refused or reset connection, total deadline exceeded."""

    default_code = "synerise_unavailable"
    default_message = "Synerise is unavailable."


class RateLimited(TransientUpstreamError):
    """Synerise answered 429; ``retry_after`` is the parsed, capped ``Retry-After``."""

    default_code = "synerise_rate_limited"
    default_message = "Synerise rate limit reached."


class BadResponse(TransientUpstreamError):
    """Synerise answered something unusable: not JSON, too large, no token, wrong shape,
    or a redirect."""

    default_code = "synerise_bad_response"
    default_message = "Synerise sent an invalid response."


class CircuitOpen(TransientUpstreamError):
    """The circuit breaker is open: no request was sent."""

    default_code = "synerise_circuit_open"
    default_message = "Synerise is temporarily unavailable."


class SyneriseBusy(TransientUpstreamError):
    """Too many interactive Synerise calls are in flight in this process (the bulkhead of
    :mod:`django_synerise.bulkhead` is full): no request was sent."""

    default_code = "synerise_busy"
    default_message = "Too many Synerise calls in flight."


class CredentialsRejected(UpstreamError):
    """Synerise answered 401 or 403: wrong credentials, unknown or expired token."""

    default_code = "credentials_rejected"
    default_message = "Synerise rejected the credentials."


class BadRequest(UpstreamError):
    """Synerise answered 400 (or another 4xx); ``field_errors`` lists the rejected fields."""

    default_code = "synerise_bad_request"
    default_message = "Synerise rejected the request."


# --------------------------------------------------------------------------- tokens


class TokenVerificationError(SyneriseError):
    """A token failed verification (``reason`` says why: expired, signature, malformed...).

    Formerly ``InvalidToken`` (deprecated alias for one release).
    """

    default_code = "invalid_token"
    default_message = "The token is invalid."

    def __init__(self, message: str | None = None, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class TokenDecryptionError(SyneriseError):
    """A stored token could not be decrypted or is bound to another row (fail closed)."""

    default_code = "token_decryption_failed"
    default_message = "The stored token could not be decrypted."


class AccountInactive(SyneriseError):
    """The Django user linked to the Synerise client is inactive; sign-in is refused."""

    default_code = "account_inactive"
    default_message = "This account is disabled."


class LoginRequired(SyneriseError):
    """The user has no usable Synerise token and must sign in again.

    ``reason`` is one of ``no_token``, ``expired``, ``needs_login``, ``revoked``,
    ``decryption_failed``, ``rejected``, ``inactive``.
    """

    default_code = "login_required"
    default_message = "Sign in to Synerise again."

    def __init__(self, message: str | None = None, *, reason: str = "needs_login") -> None:
        super().__init__(message)
        self.reason = reason


#: Conditional-login statuses that ask the customer for a next step, with their stable codes.
CONDITIONAL_CODES: dict[str, str] = {
    "ACTIVATION_REQUIRED": "activation_required",
    "REGISTRATION_REQUIRED": "registration_required",
    "APPROVAL_REQUIRED": "approval_required",
    "TERMS_ACCEPTANCE_REQUIRED": "terms_acceptance_required",
    "MFA_REQUIRED": "mfa_required",
}


class ConditionalAuthFailed(SyneriseError):
    """Conditional login did not succeed: Synerise asks for another step first.

    ``status`` is Synerise's condition status (a key of :data:`CONDITIONAL_CODES`), ``code``
    its stable lower-case code (``activation_required``, ...) and ``conditions`` the free-form
    objects Synerise sent with it. ``UNAUTHORIZED`` is never this error: it is
    :class:`CredentialsRejected`.
    """

    default_code = "conditional_auth_failed"
    default_message = "Synerise requires another step before login."

    def __init__(self, status: str, conditions: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"Conditional login: {status}", code=CONDITIONAL_CODES.get(status))
        self.status = status
        self.conditions = list(conditions or [])


# --------------------------------------------------------------------------- deprecated names

#: Old name -> new name; the old names resolve, with a ``DeprecationWarning``, for one release
#: (they collided with ``django.core.exceptions.FieldError``, PyJWT's ``InvalidTokenError`` and
#: ``cryptography.fernet.InvalidToken``).
_DEPRECATED_NAMES = {
    "FieldError": "FieldErrorDetail",
    "InvalidToken": "TokenVerificationError",
}


def __getattr__(name: str) -> Any:
    """Resolve a deprecated name to its new class, warning once per access site."""
    new = _DEPRECATED_NAMES.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"django_synerise.exceptions.{name} is deprecated; use {new} (removed in the next "
        "release).",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
