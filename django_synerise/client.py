"""The one HTTP seam to Synerise: pooled sessions, timeouts, a total deadline and typed errors.

Every request goes through :class:`SyneriseClient`:

* one pooled :class:`requests.Session` per process **and** thread (created lazily, recreated
  after ``fork``), with a connect-phase retry of at most one attempt and no read or status
  retries (login and refresh are non-idempotent POSTs). The session's route to ``BASE_URL``
  (its urllib3 connection pool, with the proxy and CA bundle of the environment as requests
  resolves them) is worked out once per session and base URL, and each call goes straight to
  that pool: the per-request work of ``Session.request`` (environment lookups, header and
  cookie merging) is not repeated for every call;
* ``timeout=(connect, read)`` from ``TIMEOUT`` plus a wall-clock ``TOTAL_TIMEOUT`` enforced
  while the body is streamed, and a ``MAX_RESPONSE_BYTES`` cap on the (decoded) body;
* redirects are never followed (a 3xx is :class:`~django_synerise.exceptions.BadResponse`);
* responses are parsed strictly (JSON ``Content-Type``, UTF-8, no duplicate keys, no
  ``NaN``) and shape-checked before anything is returned;
* every call runs under the process's :class:`~django_synerise.breaker.CircuitBreaker`.

Only the method, path, status and elapsed time are logged; never a token, password, provider
token or API key.
"""

from __future__ import annotations

import contextlib
import copy
import email.utils
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeGuard, TypeVar

import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse, HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from . import __version__, metrics, process_state
from .breaker import CircuitBreaker, get_breaker
from .conf import synerise_settings
from .conversions import timeout_pair
from .exceptions import (
    BadRequest,
    BadResponse,
    CredentialsRejected,
    FieldErrorDetail,
    RateLimited,
    SyneriseConfigurationError,
    SyneriseUnavailable,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AuthResult",
    "ConditionalResult",
    "SyneriseClient",
    "close_session",
    "get_client",
    "get_session",
    "is_token_shaped",
    "parse_retry_after",
]

USER_AGENT = f"django-synerise/{__version__}"
AUTH_APIS = frozenset({"v2", "v3"})

#: Characters a token may contain: RFC 6750 ``b64token`` plus the JWS/JWE dot separator.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_DIGITS_RE = re.compile(r"[0-9]+")
_CHUNK = 8192
#: Upper bound on timestamps accepted from Synerise (year 2200), in seconds.
_MAX_TIMESTAMP = 7_258_118_400
_MAX_MESSAGE = 300

T = TypeVar("T")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, repr=False)
class AuthResult:
    """A token issued by Synerise with the metadata of the response.

    ``expiration`` comes from the response's ``expiration`` (unix seconds) and ``created`` from
    ``created`` (unix milliseconds); either is ``None`` when Synerise did not send it.
    ``repr()``/``str()`` never show the token.
    """

    token: str
    expiration: datetime | None = None
    created: datetime | None = None
    origin: str | None = None
    realm: str | None = None
    custom_id: str | None = None

    def __repr__(self) -> str:
        expiration = self.expiration.isoformat() if self.expiration else None
        return (
            f"AuthResult(token=<redacted>, expiration={expiration!r}, origin={self.origin!r}, "
            f"realm={self.realm!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class ConditionalResult:
    """Answer of conditional login: ``status`` (``SUCCESS``, ``ACTIVATION_REQUIRED``, ...),
    the free-form ``conditions`` list and, only on ``SUCCESS``, the issued token."""

    status: str
    conditions: list[dict[str, Any]] = field(default_factory=list)
    result: AuthResult | None = None

    @property
    def succeeded(self) -> bool:
        """True when Synerise issued a token (``status == "SUCCESS"``)."""
        return self.status == "SUCCESS" and self.result is not None


# --------------------------------------------------------------------------- sessions


_local = threading.local()


def _new_session() -> requests.Session:
    retry = Retry(
        total=1,
        connect=1,  # errors raised before the request was sent: safe to retry once
        read=False,  # a read error re-raises at once: the request may have been processed
        status=0,
        other=0,
        redirect=0,
        allowed_methods=None,
        status_forcelist=(),
        raise_on_redirect=False,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    pool_size = max(1, synerise_settings.REFRESH_CONCURRENCY or 1)
    adapter = HTTPAdapter(
        pool_connections=4, pool_maxsize=pool_size, max_retries=retry, pool_block=False
    )
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.clear()
    session.headers["User-Agent"] = USER_AGENT
    return session


def get_session() -> requests.Session:
    """Return this thread's pooled session, creating it on first use and after a fork.

    Sessions are never shared between threads or processes (requests' ``Session`` is not
    thread-safe and its sockets must not cross a ``fork``): each records the
    :func:`~django_synerise.process_state.generation` it was made in.
    """
    generation = process_state.generation()
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None or getattr(_local, "generation", None) != generation:
        session = _new_session()
        _local.session = session
        _local.generation = generation
        _local.routes = {}
    return session


@dataclass(frozen=True)
class _Route:
    """Where this thread's session sends the requests for one base URL.

    ``pool`` is the session adapter's urllib3 pool for the base URL (through the proxy the
    environment names for it, with the CA bundle it names), ``prefix`` what goes before a path
    in the request line (the base URL's path, or the whole base URL through a plain-HTTP
    proxy) and ``retries`` the adapter's retry policy.
    """

    pool: HTTPConnectionPool
    prefix: str
    retries: Retry


def _new_route(session: requests.Session, base_url: str) -> _Route:
    """Resolve ``base_url`` the way ``Session.request`` resolves each request to it.

    :raises requests.RequestException: the base URL is not a usable ``http(s)`` URL.
    :raises OSError: the CA bundle named by the environment does not exist.
    """
    probe = requests.Request("GET", base_url + "/").prepare()
    if probe.url is None:  # pragma: no cover - prepare() sets it or raises
        raise requests.exceptions.InvalidURL(f"Invalid URL {base_url!r}")
    env = session.merge_environment_settings(probe.url, {}, None, None, None)
    adapter = session.get_adapter(probe.url)
    if not isinstance(adapter, HTTPAdapter):  # pragma: no cover - only ours are mounted
        raise requests.exceptions.InvalidSchema(f"No HTTP adapter for {base_url!r}")
    try:
        pool = adapter.get_connection_with_tls_context(
            probe, env["verify"], proxies=env["proxies"], cert=env["cert"]
        )
    except LocationValueError as exc:
        raise requests.exceptions.InvalidURL(exc) from exc
    if not isinstance(pool, HTTPConnectionPool):  # pragma: no cover - http(s) pools only
        raise requests.exceptions.InvalidSchema(f"No HTTP pool for {base_url!r}")
    # requests leaves cert_verify unannotated.
    adapter.cert_verify(pool, probe.url, env["verify"], env["cert"])  # type: ignore[no-untyped-call]
    prefix = adapter.request_url(probe, env["proxies"])[:-1]  # without the probe's "/"
    return _Route(pool=pool, prefix=prefix, retries=adapter.max_retries)


def _route(base_url: str) -> _Route:
    """This thread's route to ``base_url``, resolved on first use (and again when its pool
    was closed, e.g. evicted by the adapter's pool manager)."""
    session = get_session()
    routes: dict[str, _Route] = _local.routes
    route = routes.get(base_url)
    if route is None or route.pool.pool is None:
        route = routes[base_url] = _new_route(session, base_url)
    return route


def _transport_failure(exc: Exception) -> tuple[str, bool]:
    """The message for a failed urllib3 call, and whether it is a configuration error.

    The same classification as requests' ``HTTPAdapter.send``: a connect timeout, a read
    timeout, a TLS failure, any other failure to reach Synerise.
    """
    reason: BaseException = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
    if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
        return "Timed out connecting to Synerise.", False
    if isinstance(reason, ReadTimeoutError):
        return "Synerise did not answer in time.", False
    if isinstance(reason, Urllib3SSLError):
        return "TLS error talking to Synerise.", False
    if isinstance(reason, LocationValueError):
        return "SYNERISE['BASE_URL'] is not a valid URL.", True
    if isinstance(exc, (MaxRetryError, ProtocolError, OSError)) or not isinstance(exc, HTTPError):
        return "Could not reach Synerise.", False
    return "Synerise request failed.", False


def close_session() -> None:
    """Close and forget this thread's session (tests, thread pools that shut down).

    A session inherited from the parent process is forgotten, never closed (its sockets are
    the parent's).
    """
    session: requests.Session | None = getattr(_local, "session", None)
    if session is not None and getattr(_local, "generation", None) == process_state.generation():
        session.close()
    _local.session = None
    _local.generation = None
    _local.routes = {}


# --------------------------------------------------------------------------- helpers


def parse_retry_after(
    value: str | None, *, cap: float | None = None, now: datetime | None = None
) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP-date.

    :returns: seconds to wait (a past date gives ``0.0``), capped at ``cap`` (default
        ``RETRY_AFTER_MAX``); ``None`` for a missing, negative or unparseable value.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    if _DIGITS_RE.fullmatch(value):
        seconds = float(int(value))
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
    if cap is None:
        cap = synerise_settings.RETRY_AFTER_MAX
    return min(seconds, float(cap))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key in JSON object")
        result[key] = value
    return result


def _is_json_type(content_type: str | None) -> bool:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def _loads(body: bytes) -> Any:
    text = body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def _short(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "\u2026"


def _timestamp(value: Any, *, name: str, scale: int, status: int) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadResponse(f"Synerise sent a non-integer {name!r}.", status=status)
    seconds = value / scale
    if not 0 < seconds < _MAX_TIMESTAMP:
        raise BadResponse(f"Synerise sent an out-of-range {name!r}.", status=status)
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _optional_str(
    data: Mapping[str, Any], key: str, *, status: int, allow_int: bool = False
) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise BadResponse(f"Synerise sent a non-string {key!r}.", status=status)
    return value


def is_token_shaped(token: object, *, max_bytes: int | None = None) -> TypeGuard[str]:
    """True when ``token`` is a non-empty printable token (JWS, JWE or opaque) within
    ``MAX_TOKEN_BYTES``: safe to store and to send in an ``Authorization`` header."""
    if not isinstance(token, str) or not token:
        return False
    limit = max_bytes if max_bytes is not None else synerise_settings.MAX_TOKEN_BYTES
    return len(token) <= limit and _TOKEN_RE.fullmatch(token) is not None


def _set_socket_timeout(raw: Any, seconds: float) -> None:
    """Shorten the socket timeout of a streaming response (best effort)."""
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # socket already closed
            sock.settimeout(max(0.001, seconds))


@dataclass
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_ms: float


# --------------------------------------------------------------------------- client


class SyneriseClient:
    """Synerise client-authentication API (``/sauth/{v2,v3}``, ``/v4/public.pem``,
    ``/v4/my-account/personal-information``).

    Each keyword left as ``None`` is read from the live ``SYNERISE`` settings on every call.
    Methods return typed results and raise subclasses of
    :class:`~django_synerise.exceptions.UpstreamError`:

    * 401/403 :class:`~django_synerise.exceptions.CredentialsRejected`;
    * 429 :class:`~django_synerise.exceptions.RateLimited` (``retry_after`` parsed, capped);
    * other 4xx :class:`~django_synerise.exceptions.BadRequest` (``field_errors``);
    * 5xx, timeouts, refused/reset connections, the total deadline:
      :class:`~django_synerise.exceptions.SyneriseUnavailable`;
    * unusable 2xx answers and redirects: :class:`~django_synerise.exceptions.BadResponse`;
    * circuit open: :class:`~django_synerise.exceptions.CircuitOpen` (nothing sent).

    A missing ``API_KEY`` or a bad ``AUTH_API`` raises
    :class:`~django_synerise.exceptions.SyneriseConfigurationError`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        auth_api: str | None = None,
        timeout: float | tuple[float, float] | None = None,
        total_timeout: float | None = None,
        max_response_bytes: int | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url.rstrip("/") if base_url else None
        self._api_version = api_version
        self._auth_api = auth_api
        self._timeout = timeout
        self._total_timeout = total_timeout
        self._max_response_bytes = max_response_bytes
        self._breaker = breaker

    def __repr__(self) -> str:
        return f"SyneriseClient(base_url={self.base_url!r}, auth_api={self._auth_api!r})"

    # ------------------------------------------------------------------ configuration

    @property
    def base_url(self) -> str:
        """Base URL without a trailing slash."""
        return self._base_url or synerise_settings.BASE_URL

    @property
    def api_key(self) -> str:
        """The Profile API key. :raises SyneriseConfigurationError: when not configured."""
        key = self._api_key if self._api_key is not None else synerise_settings.API_KEY
        if not isinstance(key, str) or not key.strip():
            raise SyneriseConfigurationError("SYNERISE['API_KEY'] is not set.")
        return key

    @property
    def auth_api(self) -> str:
        """``"v3"`` or ``"v2"``. :raises SyneriseConfigurationError: for anything else."""
        value = self._auth_api or synerise_settings.AUTH_API
        if value not in AUTH_APIS:
            raise SyneriseConfigurationError("SYNERISE['AUTH_API'] must be 'v3' or 'v2'.")
        return value

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding this client's calls (by default the process's
        breaker for :attr:`base_url`)."""
        return self._breaker if self._breaker is not None else get_breaker(self.base_url)

    @property
    def timeouts(self) -> tuple[float, float]:
        """``(connect, read)`` seconds."""
        if self._timeout is None:
            return synerise_settings.TIMEOUT
        return timeout_pair(self._timeout)

    @property
    def total_timeout(self) -> float:
        """Wall-clock seconds a whole call (connect, headers and body) may take."""
        if self._total_timeout is None:
            return synerise_settings.TOTAL_TIMEOUT
        return float(self._total_timeout)

    @property
    def max_response_bytes(self) -> int:
        """Largest (decoded) response body accepted."""
        if self._max_response_bytes is None:
            return synerise_settings.MAX_RESPONSE_BYTES
        return int(self._max_response_bytes)

    def frozen(self) -> SyneriseClient:
        """A copy of this client (same class) with every setting it reads resolved now.

        For many calls in a row under the same settings, such as one refresh batch: the
        copy does not look the ``SYNERISE`` settings or the breaker up on every call. When a
        setting is unusable (no ``API_KEY``, say) the copy reads it live like this client,
        so each call raises as it would have.
        """
        clone = copy.copy(self)
        try:
            clone._api_key = self.api_key
            clone._base_url = self.base_url
            clone._auth_api = self.auth_api
        except SyneriseConfigurationError:
            return self
        if self._api_version is None:
            clone._api_version = str(synerise_settings.API_VERSION)
        clone._timeout = self.timeouts
        clone._total_timeout = self.total_timeout
        clone._max_response_bytes = self.max_response_bytes
        clone._breaker = self.breaker
        return clone

    def _auth_path(self, suffix: str) -> str:
        return f"/sauth/{self.auth_api}/auth/{suffix}"

    # ------------------------------------------------------------------ public API

    def login(
        self,
        *,
        identity_provider: str = "SYNERISE",
        email: str | None = None,
        custom_id: str | None = None,
        password: str | None = None,
        identity_provider_token: str | None = None,
        uuid: str | None = None,
        device_id: str | None = None,
        agreements: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> AuthResult:
        """``POST /sauth/{v}/auth/login/client``: log a client in (other providers than
        ``SYNERISE`` create the client on first login).

        :returns: the issued token and its metadata.
        :raises CredentialsRejected: wrong credentials or API key (401/403).
        :raises BadRequest: missing or invalid fields (400).
        """
        body = self._login_body(
            identity_provider=identity_provider,
            email=email,
            custom_id=custom_id,
            password=password,
            identity_provider_token=identity_provider_token,
            uuid=uuid,
            device_id=device_id,
            agreements=agreements,
            attributes=attributes,
        )
        return self._call(
            "POST", self._auth_path("login/client"), json_body=body, parse=_parse_auth
        )

    def login_conditional(
        self,
        *,
        identity_provider: str = "SYNERISE",
        email: str | None = None,
        custom_id: str | None = None,
        password: str | None = None,
        identity_provider_token: str | None = None,
        uuid: str | None = None,
        device_id: str | None = None,
        agreements: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> ConditionalResult:
        """``POST /sauth/{v}/auth/login/client/conditional``: like :meth:`login` but never
        registers a client.

        :returns: the condition status; ``result`` holds the token only on ``SUCCESS``.
        :raises BadResponse: ``SUCCESS`` without a usable token, or no ``status``.
        """
        body = self._login_body(
            identity_provider=identity_provider,
            email=email,
            custom_id=custom_id,
            password=password,
            identity_provider_token=identity_provider_token,
            uuid=uuid,
            device_id=device_id,
            agreements=agreements,
            attributes=attributes,
        )
        return self._call(
            "POST",
            self._auth_path("login/client/conditional"),
            json_body=body,
            parse=_parse_conditional,
        )

    def login_anonymous(self, *, uuid: str, device_id: str | None = None) -> AuthResult:
        """``POST /sauth/{v}/auth/login/client/anonymous``: an anonymous-client token.

        :returns: the issued token (realm ``anonymous_client``).
        """
        body: dict[str, Any] = {"apiKey": self.api_key, "uuid": uuid}
        if device_id is not None:
            body["deviceId"] = device_id
        return self._call(
            "POST", self._auth_path("login/client/anonymous"), json_body=body, parse=_parse_auth
        )

    def refresh(self, token: str) -> AuthResult:
        """``POST /sauth/{v}/auth/refresh/client`` with ``Authorization: Bearer <token>`` and
        ``{"apiKey": ...}``; works only while ``token`` is still valid.

        :returns: the new token.
        :raises CredentialsRejected: the token is expired, unknown or revoked (401), the API
            key is wrong (403), or ``token`` is malformed (not sent; ``status`` is ``None``).
        """
        self._require_token(token)
        return self._call(
            "POST",
            self._auth_path("refresh/client"),
            json_body={"apiKey": self.api_key},
            token=token,
            parse=_parse_auth,
        )

    def public_key(self) -> str:
        """``GET /v4/public.pem``: the PEM public key that signs client tokens.

        :returns: the PEM text (an RSA key of at least 2048 bits).
        :raises BadResponse: not a loadable RSA public key.
        """
        return self._call(
            "GET", "/v4/public.pem", accept="application/x-pem-file, text/plain", parse=_parse_pem
        )

    def personal_information(self, token: str) -> dict[str, Any]:
        """``GET /v4/my-account/personal-information`` as the client owning ``token``.

        :returns: the JSON object (``clientId``, ``email``, ``customId``, ``uuid``, ...).
        :raises CredentialsRejected: the token is not accepted.
        """
        self._require_token(token)
        return self._call_json("GET", "/v4/my-account/personal-information", token=token)

    # ------------------------------------------------------------------ request building

    def _login_body(self, *, identity_provider: Any, **fields: Any) -> dict[str, Any]:
        provider = getattr(identity_provider, "value", identity_provider)
        if not isinstance(provider, str) or not provider:
            raise ValueError("identity_provider must be a non-empty string")
        names = {
            "identity_provider_token": "identityProviderToken",  # nosec B105
            "email": "email",
            "custom_id": "customId",
            "password": "password",  # nosec B105
            "uuid": "uuid",
            "device_id": "deviceId",
            "agreements": "agreements",
            "attributes": "attributes",
        }
        body: dict[str, Any] = {"apiKey": self.api_key, "identityProvider": provider.upper()}
        for name, camel in names.items():
            value = fields.get(name)
            if value is not None:
                body[camel] = dict(value) if isinstance(value, Mapping) else value
        return body

    def _require_token(self, token: str) -> None:
        if not is_token_shaped(token):
            raise CredentialsRejected("The token is malformed; it was not sent to Synerise.")

    # ------------------------------------------------------------------ transport

    def _call_json(
        self, method: str, path: str, *, json_body: Any = None, token: str | None = None
    ) -> dict[str, Any]:
        return self._call(method, path, json_body=json_body, token=token, parse=_parse_object)

    def _call(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[_Response], T],
        json_body: Any = None,
        token: str | None = None,
        accept: str = "application/json",
    ) -> T:
        """Send one request under the breaker; ``parse`` runs inside it, so an unusable
        answer counts as a failure."""

        def attempt() -> T:
            response = self._send(method, path, json_body=json_body, token=token, accept=accept)
            _raise_for_status(response, path)
            return parse(response)

        try:
            return self.breaker.call(attempt)
        finally:
            metrics.observe_breaker(self.breaker)

    def _send(
        self, method: str, path: str, *, json_body: Any, token: str | None, accept: str
    ) -> _Response:
        headers = {
            "Api-Version": str(
                synerise_settings.API_VERSION if self._api_version is None else self._api_version
            ),
            "Accept": accept,
            "User-Agent": USER_AGENT,
        }
        data: bytes | None = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        connect_timeout, read_timeout = self.timeouts
        total = self.total_timeout
        max_bytes = self.max_response_bytes
        base_url = self.base_url
        start = time.monotonic()
        deadline = start + total
        try:
            route = _route(base_url)
        except (requests.RequestException, LocationValueError) as exc:
            raise SyneriseConfigurationError("SYNERISE['BASE_URL'] is not a valid URL.") from exc
        except OSError as exc:  # the CA bundle the environment names is missing
            raise self._unavailable(method, path, start, "TLS error talking to Synerise.") from exc
        try:
            response = route.pool.urlopen(
                method,
                route.prefix + path,
                body=data,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=route.retries,
                timeout=Timeout(connect=min(connect_timeout, total), read=min(read_timeout, total)),
            )
        except (HTTPError, OSError) as exc:
            message, configuration = _transport_failure(exc)
            if configuration:
                raise SyneriseConfigurationError(message) from exc
            raise self._unavailable(method, path, start, message) from exc
        try:
            body = self._read_body(
                response,
                method=method,
                path=path,
                start=start,
                deadline=deadline,
                read_timeout=read_timeout,
                max_bytes=max_bytes,
            )
        finally:
            response.close()  # a body not read to its end must not go back to the pool
            response.release_conn()
        elapsed_ms = (time.monotonic() - start) * 1000
        metrics.observe_upstream(path, elapsed_ms / 1000)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level, "Synerise %s %s -> %s in %.1f ms", method, path, response.status, elapsed_ms
            )
        return _Response(response.status, response.headers, body, elapsed_ms)

    def _unavailable(
        self, method: str, path: str, start: float, message: str, status: int | None = None
    ) -> SyneriseUnavailable:
        metrics.observe_upstream(path, time.monotonic() - start)
        logger.warning(
            "Synerise %s %s failed after %.1f ms: %s",
            method,
            path,
            (time.monotonic() - start) * 1000,
            message,
        )
        return SyneriseUnavailable(message, status=status, path=path)

    def _read_body(
        self,
        response: BaseHTTPResponse,
        *,
        method: str,
        path: str,
        start: float,
        deadline: float,
        read_timeout: float,
        max_bytes: int,
    ) -> bytes:
        """Stream the body under the total deadline and the size cap.

        A 2xx body over the cap is :class:`BadResponse`; an error body over the cap is cut
        (the status alone decides the exception).
        """
        status = response.status
        success = 200 <= status < 300
        declared = response.headers.get("Content-Length")
        if success and declared and declared.strip().isdigit() and int(declared) > max_bytes:
            raise BadResponse(
                "Synerise's answer is larger than MAX_RESPONSE_BYTES.", status=status, path=path
            )
        chunks: list[bytes] = []
        size = 0
        socket_timeout: float | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable(
                    method, path, start, "Synerise's answer exceeded the total deadline.", status
                )
            # Set the socket's timeout only when it changes: the read timeout, then shorter
            # ones as the total deadline comes near.
            wanted = min(read_timeout, remaining)
            if socket_timeout is None or wanted < socket_timeout:
                _set_socket_timeout(response, wanted)
                socket_timeout = wanted
            try:
                chunk = response.read1(_CHUNK, decode_content=True)
            except ReadTimeoutError as exc:
                if time.monotonic() >= deadline - 0.01:
                    message = "Synerise's answer exceeded the total deadline."
                else:
                    message = "Synerise stopped sending its answer (read timeout)."
                raise self._unavailable(method, path, start, message, status) from exc
            except (ProtocolError, Urllib3SSLError, OSError) as exc:
                raise self._unavailable(
                    method, path, start, "Connection to Synerise broke mid-answer.", status
                ) from exc
            except DecodeError as exc:
                raise BadResponse(
                    "Synerise's answer could not be decoded.", status=status, path=path
                ) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                if success:
                    raise BadResponse(
                        "Synerise's answer is larger than MAX_RESPONSE_BYTES.",
                        status=status,
                        path=path,
                    )
                chunks.append(chunk[: max(0, max_bytes - (size - len(chunk)))])
                break
            chunks.append(chunk)
        return b"".join(chunks)


# --------------------------------------------------------------------------- parsing


def _raise_for_status(response: _Response, path: str) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise BadResponse(
            "Synerise answered with a redirect; it was not followed.", status=status, path=path
        )
    fields = _error_fields(response)
    kwargs: dict[str, Any] = {
        "status": status,
        "error": fields["error"],
        "error_code": fields["error_code"],
        "path": path,
        "field_errors": fields["field_errors"],
    }
    message = fields["message"]
    if status in (401, 403):
        raise CredentialsRejected(message, **kwargs)
    if status == 429:
        raise RateLimited(
            message, retry_after=parse_retry_after(response.headers.get("Retry-After")), **kwargs
        )
    if 400 <= status < 500:
        raise BadRequest(message, **kwargs)
    if status >= 500:
        raise SyneriseUnavailable(
            message, retry_after=parse_retry_after(response.headers.get("Retry-After")), **kwargs
        )
    raise BadResponse(f"Unexpected HTTP status {status} from Synerise.", status=status, path=path)


def _error_fields(response: _Response) -> dict[str, Any]:
    """Read a Spring-style error body (``error``, ``message``, ``errorCode``, ``errors[]``);
    anything unparseable yields empty fields. ``rejectedValue`` is never kept (it may echo a
    password)."""
    fields: dict[str, Any] = {
        "error": None,
        "error_code": None,
        "message": None,
        "field_errors": [],
    }
    if not response.body or not _is_json_type(response.headers.get("Content-Type")):
        return fields
    try:
        data = _loads(response.body)
    except (ValueError, RecursionError):
        return fields
    if not isinstance(data, dict):
        return fields
    fields["error"] = _short(data.get("error")) if isinstance(data.get("error"), str) else None
    code = data.get("errorCode")
    fields["error_code"] = _short(code) if isinstance(code, (str, int)) else None
    message = data.get("message")
    fields["message"] = _short(message) if isinstance(message, str) and message else None
    errors = data.get("errors")
    if isinstance(errors, list):
        fields["field_errors"] = [
            _field_error(item) for item in errors[:50] if isinstance(item, dict)
        ]
    return fields


def _field_error(item: dict[str, Any]) -> FieldErrorDetail:
    """One entry of a Spring-style ``errors[]`` list (``field``, ``message`` or
    ``defaultMessage``, ``code``); values of the wrong type are dropped."""
    field_name = item.get("field")
    item_message = item.get("message") or item.get("defaultMessage") or ""
    item_code = item.get("code")
    return FieldErrorDetail(
        field=_short(field_name) if isinstance(field_name, str) else None,
        message=(_short(item_message) or "") if isinstance(item_message, str) else "",
        code=item_code
        if isinstance(item_code, (str, int)) and not isinstance(item_code, bool)
        else None,
    )


def _parse_object(response: _Response) -> dict[str, Any]:
    """Parse a 2xx JSON object. :raises BadResponse: anything else."""
    status = response.status
    if not _is_json_type(response.headers.get("Content-Type")):
        raise BadResponse("Synerise's answer is not JSON.", status=status)
    if not response.body:
        raise BadResponse("Synerise's answer is empty.", status=status)
    try:
        data = _loads(response.body)
    except (ValueError, RecursionError) as exc:
        raise BadResponse("Synerise's answer is not valid JSON.", status=status) from exc
    if not isinstance(data, dict):
        raise BadResponse("Synerise's answer is not a JSON object.", status=status)
    return data


def _parse_pem(response: _Response) -> str:
    """Parse ``/v4/public.pem``. :raises BadResponse: not a loadable RSA public key."""
    status = response.status
    mime = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if mime in {"text/html", "application/xhtml+xml"}:
        raise BadResponse("Synerise's public key answer is HTML.", status=status)
    try:
        text = response.body.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise BadResponse("Synerise's public key is not ASCII PEM.", status=status) from exc
    if not text.startswith("-----BEGIN "):
        raise BadResponse("Synerise's public key is not PEM.", status=status)
    try:
        key = load_pem_public_key(text.encode("ascii"))
    except (ValueError, TypeError) as exc:
        raise BadResponse("Synerise's public key could not be loaded.", status=status) from exc
    if not isinstance(key, RSAPublicKey) or key.key_size < 2048:
        raise BadResponse("Synerise's public key is not an RSA key of >= 2048 bits.", status=status)
    return text + "\n"


def _auth_result_from(data: Mapping[str, Any], *, status: int = 200) -> AuthResult:
    token = data.get("token")
    if not is_token_shaped(token):
        raise BadResponse("Synerise's answer has no usable token.", status=status)
    return AuthResult(
        token=token,
        expiration=_timestamp(data.get("expiration"), name="expiration", scale=1, status=status),
        created=_timestamp(data.get("created"), name="created", scale=1000, status=status),
        origin=_optional_str(data, "origin", status=status),
        realm=_optional_str(data, "realm", status=status),
        custom_id=_optional_str(data, "customId", status=status, allow_int=True),
    )


def _parse_auth(response: _Response) -> AuthResult:
    """Parse a login/refresh answer. :raises BadResponse: no usable token or bad metadata."""
    return _auth_result_from(_parse_object(response), status=response.status)


def _parse_conditional(response: _Response) -> ConditionalResult:
    """Parse a conditional-login answer. :raises BadResponse: no status, bad conditions, or
    ``SUCCESS`` without a usable token."""
    data = _parse_object(response)
    status = data.get("status")
    if not isinstance(status, str) or not status:
        raise BadResponse("Conditional login answer has no status.", status=response.status)
    conditions = data.get("conditions")
    if conditions is None:
        conditions = []
    if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
        raise BadResponse(
            "Conditional login 'conditions' is not a list of objects.", status=response.status
        )
    result = _auth_result_from(data, status=response.status) if status == "SUCCESS" else None
    return ConditionalResult(status=status, conditions=conditions, result=result)


_default_client: SyneriseClient | None = None
_default_lock = threading.Lock()


def _forget_default_client() -> None:
    global _default_client
    _default_client = None


def _new_default_lock() -> None:
    global _default_lock
    _default_lock = threading.Lock()


def get_client() -> SyneriseClient:
    """Return the default client (reads live settings; shared, thread-safe).

    The adapter's ``get_client()`` hook returns this unless a project overrides it.
    """
    global _default_client
    if _default_client is None:
        with _default_lock:
            if _default_client is None:
                _default_client = SyneriseClient()
    return _default_client


process_state.register("client.sessions", reset=close_session)
process_state.register(
    "client.default_client", after_fork=_new_default_lock, reset=_forget_default_client
)
