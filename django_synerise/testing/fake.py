"""FakeSynerise: a real HTTP server on loopback that behaves like the Synerise client-auth API.

This module never imports Django, so ``python -m django_synerise.testing`` runs without settings.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
import uuid as uuid_module
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from requests.structures import CaseInsensitiveDict

from ..providers import IDENTITY_PROVIDERS, SOCIAL_PROVIDERS
from .faults import FaultRule, FaultSet
from .records import FakeClient, ProviderIdentity, RecordedRequest, TokenRecord
from .tokens import get_public_key_pem, next_created_ms, sign_claims
from .tracker import TRACKER_SCRIPT_PATH, tracker_script
from .wire import (
    Handler,
    Response,
    Server,
    error_response,
    field_error,
    json_response,
    read_body,
    reset_connection,
    spring_error,
    write_response,
)

__all__ = [
    "CONDITION_STATUSES",
    "PROVIDERS",
    "FakeClient",
    "FakeSynerise",
    "ProviderIdentity",
    "RecordedRequest",
    "spring_error",
]

logger = logging.getLogger(__name__)

#: Conditional-login statuses a client can be held in (:meth:`FakeSynerise.set_condition`).
CONDITION_STATUSES = (
    "ACTIVATION_REQUIRED",
    "REGISTRATION_REQUIRED",
    "APPROVAL_REQUIRED",
    "TERMS_ACCEPTANCE_REQUIRED",
    "MFA_REQUIRED",
    "UNAUTHORIZED",
)
#: The ``conditions`` sent with a status when the test gave none.
DEFAULT_CONDITIONS: dict[str, list[dict[str, Any]]] = {
    "ACTIVATION_REQUIRED": [{"type": "ACTIVATION"}],
    "REGISTRATION_REQUIRED": [{"type": "REGISTRATION"}],
    "APPROVAL_REQUIRED": [{"type": "APPROVAL"}],
    "TERMS_ACCEPTANCE_REQUIRED": [{"type": "TERMS_ACCEPTANCE", "terms": ["terms-of-service"]}],
    "MFA_REQUIRED": [{"type": "MFA", "methods": ["EMAIL"]}],
    "UNAUTHORIZED": [],
}

#: Identity providers the login endpoints accept.
PROVIDERS = IDENTITY_PROVIDERS

_AUTH_RE = re.compile(
    r"^/sauth/(?P<version>v2|v3)/auth/"
    r"(?P<action>login/client|login/client/conditional|login/client/anonymous|refresh/client)$"
)
_ACTIONS = {
    "login/client": "login",
    "login/client/conditional": "conditional",
    "login/client/anonymous": "anonymous",
    "refresh/client": "refresh",
}
PUBLIC_KEY_PATH = "/v4/public.pem"
PERSONAL_INFORMATION_PATH = "/v4/my-account/personal-information"
CONTROL_PREFIX = "/__fake__/"
#: The Profile API key a FakeSynerise accepts unless given another one. Development settings
#: that point at ``synerise_fake_server`` use it (it is printed when the server starts).
DEFAULT_API_KEY = "fake-api-key"
REDIRECT_HOST = "http://synerise-redirect.invalid"
_STATUSES = frozenset(s.value for s in HTTPStatus)


class FakeSynerise:
    """A fake Synerise client-auth API served over real HTTP on ``127.0.0.1`` (free port).

    It also serves a stand-in web tracker script (:mod:`django_synerise.testing.tracker`), so
    ``TRACKER_DOMAIN`` can point at it.

    Use as a context manager (``with FakeSynerise() as fake: ...``) or call :meth:`start` and
    :meth:`stop`. All public methods are thread-safe.

    ``api_key`` is the only Profile API key the fake accepts (others get 403);
    ``token_lifetime`` is the lifetime of the tokens it signs, in seconds (settable later);
    ``business_profile_id`` becomes the ``bpi`` claim; ``port=0`` picks a free port;
    ``latency`` is added to every response; ``presign`` hands out tokens signed ahead of time
    by a background thread (pools of ``presign_depth`` per client); ``record_requests=False``
    keeps only the per-path counters (long benchmarks); ``require_uuid=True`` answers 400 to
    a SYNERISE login without a ``uuid``, as the Synerise API reference says it is required
    (settable later).

    ``oauth_mode`` makes ``identityProvider: OAUTH`` logins validate the site's own tokens
    as Synerise does (see :meth:`configure_oauth`); ``None`` keeps the registry of
    :meth:`provider_token`.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        token_lifetime: int = 3600,
        business_profile_id: str | int | None = "1234",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        presign: bool = False,
        presign_depth: int = 2,
        record_requests: bool = True,
        oauth_mode: str | None = None,
        oauth_jwks_url: str | None = None,
        oauth_userinfo_url: str | None = None,
        oauth_issuer: str | None = None,
        oauth_audience: str | None = None,
        oauth_jwks_ttl: float = 0.0,
        require_uuid: bool = False,
    ) -> None:
        self.api_key = api_key
        self.require_uuid = require_uuid
        self.token_lifetime = int(token_lifetime)
        self.business_profile_id = None if business_profile_id is None else str(business_profile_id)
        self.host = host
        self._requested_port = int(port)
        self.latency = float(latency)
        self.presign = presign
        self.presign_depth = max(1, int(presign_depth))
        self.record_requests = record_requests
        #: Called with each :class:`RecordedRequest` before the fake answers it.
        self.on_request: Callable[[RecordedRequest], Any] | None = None
        #: Called with ``(request, status)`` after the answer was written (or the fault applied).
        self.on_response: Callable[[RecordedRequest, int], Any] | None = None
        #: Exceptions raised by ``on_request`` (the request got a 500) or ``on_response``.
        self.hook_errors: list[BaseException] = []
        self.faults = FaultSet()
        self.oauth_mode: str | None = None
        self.oauth_jwks_url: str | None = None
        self.oauth_userinfo_url: str | None = None
        self.oauth_issuer: str | None = None
        self.oauth_audience: str | None = None
        self.oauth_jwks_ttl = 0.0
        self._jwks_cache: tuple[float, dict[str, Any]] | None = None
        self.configure_oauth(
            oauth_mode,
            jwks_url=oauth_jwks_url,
            userinfo_url=oauth_userinfo_url,
            issuer=oauth_issuer,
            audience=oauth_audience,
            jwks_ttl=oauth_jwks_ttl,
        )

        self._lock = threading.RLock()
        self._clients: dict[str, FakeClient] = {}
        self._by_email: dict[str, FakeClient] = {}
        self._by_custom_id: dict[str, FakeClient] = {}
        self._social: dict[tuple[str, str], FakeClient] = {}
        self._anonymous: dict[str, FakeClient] = {}
        self._provider_tokens: dict[str, ProviderIdentity] = {}
        self._tokens: dict[str, TokenRecord] = {}
        self._pools: dict[tuple[str, str, str], deque[str]] = defaultdict(deque)
        self._refill: deque[tuple[str, str, str]] = deque()
        self._refill_wakeup = threading.Event()
        self._next_client_id = 100_000_001
        self._log: list[RecordedRequest] = []
        self._stats: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._presigner: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeSynerise:
        """Bind and serve in a background daemon thread; returns self. Idempotent."""
        if self._server is not None:
            return self
        get_public_key_pem()  # generate the process key before the first request
        self._stopping.clear()
        self._server = Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeSynerise:{self.port}",
            daemon=True,
        )
        self._thread.start()
        if self.presign:
            self._presigner = threading.Thread(
                target=self._presign_loop, name="FakeSynerise-presign", daemon=True
            )
            self._presigner.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        self._refill_wakeup.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._presigner is not None:
            self._presigner.join(timeout=5)
        self._thread = self._presigner = None

    def __enter__(self) -> FakeSynerise:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the server is serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound TCP port; raises RuntimeError before :meth:`start`."""
        if self._server is None:
            raise RuntimeError("FakeSynerise is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``) to use as ``SYNERISE["BASE_URL"]``."""
        return f"http://{self.host}:{self.port}"

    @property
    def public_key_pem(self) -> str:
        """The PEM public key that verifies every token the fake signs."""
        return get_public_key_pem()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"FakeSynerise({where})"

    # -- OAUTH identity provider -----------------------------------------------------------

    def configure_oauth(
        self,
        mode: str | None,
        *,
        jwks_url: str | None = None,
        userinfo_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        jwks_ttl: float = 0.0,
    ) -> None:
        """Set how ``identityProvider: OAUTH`` tokens are validated (Synerise's OAuth settings).

        ``mode="jwt"`` (Synerise "JWT token"): fetch ``jwks_url`` over HTTP (cached
        ``jwks_ttl`` seconds, fetched again for an unknown ``kid``), verify the signature and
        ``exp``, and ``iss``/``aud`` when ``issuer``/``audience`` are given. ``mode="server"``:
        ``GET userinfo_url`` with ``Authorization: Bearer <token>``; a 200 JSON object is the
        identity. Either way ``sub`` identifies the client (the first login registers it) and
        ``email``, ``given_name``, ``family_name`` fill the profile. A token that fails (bad
        signature, wrong issuer or audience, expired, unknown key, user-info 401) gets 401;
        a JWKS or user-info endpoint that cannot be reached or fails gets 403. ``mode=None``
        goes back to the :meth:`provider_token` registry.

        :raises ValueError: unknown mode, or the URL of the mode missing.
        """
        if mode not in (None, "jwt", "server"):
            raise ValueError("oauth mode must be None, 'jwt' or 'server'")
        if mode == "jwt" and not jwks_url:
            raise ValueError("oauth mode 'jwt' needs jwks_url")
        if mode == "server" and not userinfo_url:
            raise ValueError("oauth mode 'server' needs userinfo_url")
        self.oauth_mode = mode
        self.oauth_jwks_url = jwks_url
        self.oauth_userinfo_url = userinfo_url
        self.oauth_issuer = issuer
        self.oauth_audience = audience
        self.oauth_jwks_ttl = max(0.0, float(jwks_ttl))
        self._jwks_cache = None

    def _oauth_identity(self, token: str, path: str) -> ProviderIdentity | Response:
        """Validate a site token as the configured OAUTH mode does; identity or an error."""
        from .oauth import OAuthRefused, identity_from_jwt, identity_from_userinfo

        try:
            if self.oauth_mode == "jwt":
                claims = identity_from_jwt(
                    token,
                    fetch_jwks=self._jwks,
                    issuer=self.oauth_issuer,
                    audience=self.oauth_audience,
                )
            else:
                assert self.oauth_userinfo_url is not None
                claims = identity_from_userinfo(token, self.oauth_userinfo_url)
        except OAuthRefused as exc:
            return error_response(exc.status, exc.message, path)
        return ProviderIdentity(
            "OAUTH",
            str(claims["sub"]),
            claims.get("email") if isinstance(claims.get("email"), str) else None,
            str(claims.get("given_name") or ""),
            str(claims.get("family_name") or ""),
        )

    def _jwks(self, *, refresh: bool) -> dict[str, Any]:
        from .oauth import fetch_json

        cached = self._jwks_cache
        now = time.monotonic()
        if not refresh and cached is not None and now - cached[0] < self.oauth_jwks_ttl:
            return cached[1]
        assert self.oauth_jwks_url is not None
        data = fetch_json(self.oauth_jwks_url)
        self._jwks_cache = (now, data)
        return data

    # -- clients and provider tokens -------------------------------------------------------

    def _new_client_id(self) -> str:
        with self._lock:
            client_id = str(self._next_client_id)
            self._next_client_id += 1
            return client_id

    def add_client(
        self,
        email: str | None = None,
        password: str | None = None,
        custom_id: str | None = None,
        *,
        first_name: str = "",
        last_name: str = "",
        uuid: str | None = None,
        activated: bool = True,
        agreements: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        condition: str | None = None,
        conditions: list[dict[str, Any]] | None = None,
    ) -> FakeClient:
        """Register a SYNERISE (email/customId + password) client and return it.

        ``condition`` holds the client in a conditional-login status (see
        :meth:`set_condition`). Raises ValueError when neither email nor custom_id is given,
        when either is taken, or for an unknown ``condition``.
        """
        if not email and not custom_id:
            raise ValueError("add_client() needs an email or a custom_id")
        condition, conditions = self._check_condition(condition, conditions)
        with self._lock:
            if email and email.lower() in self._by_email:
                raise ValueError(f"email {email!r} is already registered")
            if custom_id and custom_id in self._by_custom_id:
                raise ValueError(f"custom_id {custom_id!r} is already registered")
            client = FakeClient(
                client_id=self._new_client_id(),
                email=email,
                custom_id=custom_id,
                password=password,
                uuid=uuid or str(uuid_module.uuid4()),
                first_name=first_name,
                last_name=last_name,
                activated=activated,
                agreements=dict(agreements or {}),
                attributes=dict(attributes or {}),
                created_ms=int(time.time() * 1000),
                condition=condition,
                conditions=conditions,
            )
            self._clients[client.client_id] = client
            if email:
                self._by_email[email.lower()] = client
            if custom_id:
                self._by_custom_id[custom_id] = client
        return client

    def add_social_client(
        self,
        provider: str,
        subject: str,
        *,
        email: str | None = None,
        first_name: str = "",
        last_name: str = "",
        activated: bool = True,
    ) -> FakeClient:
        """Register a client as if it had already logged in once with ``provider``/``subject``."""
        provider = self._check_provider(provider, social=True)
        with self._lock:
            if (provider, subject) in self._social:
                raise ValueError(f"{provider} subject {subject!r} is already registered")
            client = FakeClient(
                client_id=self._new_client_id(),
                email=email,
                uuid=str(uuid_module.uuid4()),
                first_name=first_name,
                last_name=last_name,
                identity_provider=provider,
                subject=subject,
                activated=activated,
                created_ms=int(time.time() * 1000),
            )
            self._clients[client.client_id] = client
            self._social[(provider, subject)] = client
        return client

    def get_client(self, client_id: str | int) -> FakeClient | None:
        """Return the client with ``client_id``, or None."""
        return self._clients.get(str(client_id))

    @property
    def clients(self) -> list[FakeClient]:
        """Every registered client (anonymous ones included), oldest first."""
        with self._lock:
            return list(self._clients.values())

    def client_for(self, provider: str, subject: str) -> FakeClient | None:
        """Return the client created by a social login of ``provider``/``subject``, or None."""
        return self._social.get((provider.upper(), subject))

    def provider_token(
        self,
        provider: str,
        subject: str | None = None,
        email: str | None = None,
        *,
        first_name: str = "",
        last_name: str = "",
    ) -> str:
        """Mint an identity-provider token the fake accepts for ``provider`` only.

        ``subject`` identifies the provider account (default: derived from ``email`` or random);
        the first successful login with it creates the Synerise client.
        """
        provider = self._check_provider(provider, social=True)
        subject = subject or email or uuid_module.uuid4().hex
        token = _provider_token_string(provider, subject, email)
        identity = ProviderIdentity(provider, subject, email, first_name, last_name)
        with self._lock:
            self._provider_tokens[token] = identity
        return token

    def revoke_client(self, client_id: str | int) -> None:
        """Invalidate every token issued so far to ``client_id`` (refresh -> 401).

        Raises KeyError for an unknown client. Tokens issued later are valid again.
        """
        with self._lock:
            client = self._clients[str(client_id)]
            client.generation += 1
            for key in [k for k in list(self._pools) if k[0] == client.client_id]:
                self._pools[key].clear()

    def deactivate_client(self, client_id: str | int) -> None:
        """Mark a client not activated: login -> 403, conditional -> ACTIVATION_REQUIRED."""
        with self._lock:
            self._clients[str(client_id)].activated = False

    def set_condition(
        self,
        client_id: str | int,
        status: str | None,
        conditions: list[dict[str, Any]] | None = None,
    ) -> FakeClient:
        """Hold a client in a conditional-login status, or release it (``status=None``).

        While held, the conditional endpoint answers 200 ``{"status": status, "conditions":
        conditions}`` (``conditions`` defaults to a typical list for the status) and the
        plain login endpoint answers 401 for ``UNAUTHORIZED`` and 403 for the others. Valid
        statuses: :data:`CONDITION_STATUSES`. Raises KeyError for an unknown client and
        ValueError for an unknown status.
        """
        status, conditions = self._check_condition(status, conditions)
        with self._lock:
            client = self._clients[str(client_id)]
            client.condition = status
            client.conditions = conditions
        return client

    @staticmethod
    def _check_condition(
        status: str | None, conditions: list[dict[str, Any]] | None
    ) -> tuple[str | None, list[dict[str, Any]]]:
        if status is None:
            return None, []
        status = str(status).upper()
        if status not in CONDITION_STATUSES:
            raise ValueError(f"Unknown condition {status!r}; expected {list(CONDITION_STATUSES)}")
        if conditions is None:
            conditions = DEFAULT_CONDITIONS[status]
        if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
            raise ValueError("conditions must be a list of objects")
        return status, [dict(item) for item in conditions]

    @staticmethod
    def _check_provider(provider: str, *, social: bool) -> str:
        provider = str(provider).upper()
        allowed = SOCIAL_PROVIDERS if social else frozenset(PROVIDERS)
        if provider not in allowed:
            raise ValueError(f"Unknown identity provider {provider!r}; expected {sorted(allowed)}")
        return provider

    # -- tokens ----------------------------------------------------------------------------

    def issue_token(
        self,
        client_id: str | int,
        lifetime: int | None = None,
        realm: str = "client",
    ) -> str:
        """Sign and register a client token for ``client_id`` (for tests and benchmarks).

        ``lifetime`` (seconds, may be negative for an already expired token) defaults to
        :attr:`token_lifetime`. Raises KeyError for an unknown client.
        """
        client = self._clients[str(client_id)]
        origin = "ANONYMOUS" if realm != "client" else client.identity_provider
        token = self._sign(client, origin=origin, realm=realm, lifetime=lifetime)
        if self.presign and lifetime is None:
            self._schedule_presign((client.client_id, origin, realm))
        return token

    def token_info(self, token: str) -> dict[str, Any] | None:
        """Return what the registry knows about ``token`` (client_id, exp, valid), or None."""
        record = self._tokens.get(token)
        if record is None:
            return None
        return {
            "client_id": record.client_id,
            "exp": record.exp,
            "created": record.created_ms,
            "origin": record.origin,
            "realm": record.realm,
            "valid": self._check_record(record) is None,
        }

    def expire_tokens(self, client_id: str | int | None = None) -> int:
        """Make the registry treat issued tokens as expired (refresh -> 401 "Token expired.").

        Only the fake's view changes; the JWT ``exp`` claim stays as signed. Returns the count.
        """
        now = int(time.time())
        count = 0
        with self._lock:
            for record in list(self._tokens.values()):
                wanted = client_id is None or record.client_id == str(client_id)
                if wanted and record.exp > now - 1:
                    record.exp = now - 1
                    count += 1
        return count

    def presign_tokens(self, client_ids: Iterable[str | int], count: int | None = None) -> int:
        """Fill each client's pool of pre-signed client tokens up to ``count``; returns how many
        were signed. ``count`` defaults to ``presign_depth``; the pools are used only when the
        fake was created with ``presign=True``. Raises KeyError for an unknown client.
        """
        signed = 0
        for client_id in client_ids:
            client = self._clients[str(client_id)]
            key = (client.client_id, client.identity_provider, "client")
            want = self.presign_depth if count is None else count
            while len(self._pools[key]) < want:
                self._pools[key].append(
                    self._sign(client, origin=key[1], realm=key[2], lifetime=None)
                )
                signed += 1
        return signed

    def _claims(
        self, client: FakeClient, *, origin: str, realm: str, lifetime: int
    ) -> dict[str, Any]:
        created_ms = next_created_ms()  # unique per token; may run ahead under heavy load
        iat = int(time.time())  # wall clock, so a burst of signing never dates tokens ahead
        claims: dict[str, Any] = {
            "iss": "Synerise",
            "rlm": realm,
            "origin": origin,
            "clId": int(client.client_id),
            "uuid": client.uuid,
        }
        if client.email:
            claims["eml"] = client.email
        if client.custom_id:
            claims["cId"] = client.custom_id
        bpi = self.business_profile_id
        if bpi is not None:
            claims["bpi"] = int(bpi) if bpi.isdigit() else bpi
        claims.update({"ctd": created_ms, "iat": iat, "exp": iat + lifetime})
        return claims

    def _sign(self, client: FakeClient, *, origin: str, realm: str, lifetime: int | None) -> str:
        lifetime = self.token_lifetime if lifetime is None else int(lifetime)
        claims = self._claims(client, origin=origin, realm=realm, lifetime=lifetime)
        token = sign_claims(claims)
        record = TokenRecord(
            client.client_id,
            claims["exp"],
            claims["ctd"],
            client.generation,
            origin,
            realm,
            lifetime,
        )
        self._tokens[token] = record
        return token

    def _take_token(self, client: FakeClient, *, origin: str, realm: str) -> str:
        """Return a fresh token for ``client``: pre-signed when available, else signed now."""
        if self.presign:
            key = (client.client_id, origin, realm)
            pool = self._pools.get(key)
            now = time.time()
            while pool:
                try:
                    token = pool.popleft()
                except IndexError:
                    break
                record = self._tokens.get(token)
                if (
                    record is not None
                    and record.generation == client.generation
                    and record.lifetime == self.token_lifetime
                    and record.exp - now >= 0.9 * record.lifetime
                ):
                    self._schedule_presign(key)
                    return token
            self._schedule_presign(key)
        return self._sign(client, origin=origin, realm=realm, lifetime=None)

    def _schedule_presign(self, key: tuple[str, str, str]) -> None:
        self._refill.append(key)
        self._refill_wakeup.set()

    def _presign_loop(self) -> None:
        while not self._stopping.is_set():
            self._refill_wakeup.wait(0.5)
            self._refill_wakeup.clear()
            while self._refill and not self._stopping.is_set():
                key = self._refill.popleft()
                client = self._clients.get(key[0])
                if client is None:
                    continue
                pool = self._pools[key]
                while len(pool) < self.presign_depth and not self._stopping.is_set():
                    pool.append(self._sign(client, origin=key[1], realm=key[2], lifetime=None))

    def _check_record(self, record: TokenRecord) -> str | None:
        """Return why a registered token is not usable (a 401 message), or None when valid."""
        client = self._clients.get(record.client_id)
        if client is None or record.generation != client.generation:
            return "Token revoked."
        if time.time() >= record.exp:
            return "Token expired."
        return None

    def _token_body(self, token: str, client: FakeClient) -> dict[str, Any]:
        record = self._tokens[token]
        return {
            "token": token,
            "expiration": record.exp,
            "created": record.created_ms,
            "origin": record.origin,
            "realm": record.realm,
            "customId": client.custom_id,
        }

    # -- request log and faults ------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded requests (control API requests excluded), oldest first."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        """Forget the recorded requests and the per-path counters."""
        with self._lock:
            self._log.clear()
            self._stats.clear()

    def count(self, path_contains: str | None = None, method: str | None = None) -> int:
        """Number of requests received whose path contains ``path_contains`` (all when None)."""
        with self._lock:
            if path_contains is None and method is None:
                return sum(self._stats.values())
            return sum(
                n
                for (m, path), n in self._path_counts().items()
                if (path_contains is None or path_contains in path)
                and (method is None or m == method.upper())
            )

    def _path_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for key, n in self._stats.items():
            method, _, path = key.partition(" ")
            counts[(method, path)] = n
        return counts

    def stats(self) -> dict[str, Any]:
        """Return ``{"requests": n, "by_path": {"POST /path": n, ...}}``."""
        with self._lock:
            return {"requests": sum(self._stats.values()), "by_path": dict(self._stats)}

    def inject(
        self,
        status: int | None = None,
        *,
        fault: str | None = None,
        times: int | None = 1,
        path: str | None = None,
        method: str | None = None,
        retry_after: str | int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 1.0,
    ) -> FaultRule:
        """Make the next ``times`` matching requests misbehave (``times=None``: until reset).

        ``status=503`` answers with that status (Spring body unless ``body`` is given; a
        ``retry_after`` becomes a ``Retry-After`` header). ``fault=`` is one of ``reset``,
        ``garbage``, ``truncated``, ``slow_body`` (1 byte per ``delay`` s), ``latency``
        (``delay`` s, then a normal answer), ``html``, ``empty``, ``redirect``,
        ``bad_json_shape``. ``path`` matches as a substring. Raises ValueError on bad input.
        """
        if fault is None:
            fault = "status"
        if fault == "status" and status is None:
            status = 503
        rule = FaultRule(
            fault=fault,
            status=int(status or 200),
            times=times,
            path=path,
            method=method,
            retry_after=None if retry_after is None else str(retry_after),
            body=body,
            headers=dict(headers or {}),
            delay=float(delay),
        )
        return self.faults.add(rule)

    def reset_faults(self) -> None:
        """Remove every injected fault (``latency`` is left as set)."""
        self.faults.clear()

    # -- HTTP handling ---------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, handler: Handler) -> None:
        """Answer one request (called by the server's handler thread)."""
        split = urlsplit(handler.path)
        path = split.path
        body = read_body(handler)
        if body is None:
            handler.close_connection = True
            write_response(
                handler,
                stop=self._stopping,
                response=error_response(413, "Request entity too large", path),
            )
            return
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=handler.command,
            path=path,
            headers=CaseInsensitiveDict(handler.headers.items()),
            json=parsed,
            body=body,
            at=time.time(),
            query=split.query,
            peer=(str(handler.client_address[0]), int(handler.client_address[1])),
        )
        if path.startswith(CONTROL_PREFIX):
            write_response(handler, stop=self._stopping, response=self._control(request))
            return
        with self._lock:
            self._stats[f"{request.method} {path}"] += 1
            if self.record_requests:
                self._log.append(request)
        hook = self.on_request
        if hook is not None:
            try:
                hook(request)
            except Exception as exc:
                self.hook_errors.append(exc)
                write_response(
                    handler,
                    stop=self._stopping,
                    response=error_response(500, "Internal Server Error", path),
                )
                return
        if self.latency > 0:
            self._stopping.wait(self.latency)
        rule = self.faults.take(request.method, path)
        if rule is None:
            response = self._route(request)
            write_response(handler, stop=self._stopping, response=response)
            status = response.status
        else:
            status = self._apply_fault(handler, request, rule)
        after = self.on_response
        if after is not None:
            try:
                after(request, status)
            except Exception as exc:
                self.hook_errors.append(exc)

    def _apply_fault(self, handler: Handler, request: RecordedRequest, rule: FaultRule) -> int:
        """Misbehave as ``rule`` says; returns the status line sent."""
        path = request.path
        kind = rule.fault
        if kind == "status":
            headers = dict(rule.headers)
            if rule.retry_after is not None:
                headers["Retry-After"] = rule.retry_after
            if rule.body is None:
                message = HTTPStatus(rule.status).phrase if rule.status in _STATUSES else "Error"
                response = error_response(rule.status, message, path, headers=headers)
            elif isinstance(rule.body, (bytes, str)):
                raw = rule.body.encode("utf-8") if isinstance(rule.body, str) else rule.body
                response = Response(rule.status, raw, headers=headers)
            else:
                response = json_response(rule.status, rule.body, headers)
            write_response(handler, stop=self._stopping, response=response)
        elif kind == "latency":
            self._stopping.wait(rule.delay)
            response = self._route(request)
            write_response(handler, stop=self._stopping, response=response)
        elif kind == "slow_body":
            response = self._route(request)
            write_response(handler, stop=self._stopping, response=response, trickle=rule.delay)
        elif kind in ("truncated", "reset"):
            response = self._route(request)
            handler.close_connection = True
            write_response(
                handler,
                stop=self._stopping,
                response=response,
                send_bytes=len(response.body) // 2,
                close=False,
            )
            if kind == "reset":
                reset_connection(handler)
        elif kind == "garbage":
            response = Response(200, b"\x8b\x00\xff\xfe{{garbage: not json\xc3\x28")
            write_response(handler, stop=self._stopping, response=response)
        elif kind == "html":
            html = b"<!DOCTYPE html><html><body><h1>Service maintenance</h1></body></html>"
            response = Response(200, html, content_type="text/html;charset=UTF-8")
            write_response(handler, stop=self._stopping, response=response)
        elif kind == "empty":
            response = Response(200, b"")
            write_response(handler, stop=self._stopping, response=response)
        elif kind == "redirect":
            response = Response(302, b"", headers={"Location": REDIRECT_HOST + path})
            write_response(handler, stop=self._stopping, response=response)
        else:  # bad_json_shape
            response = json_response(200, {"status": "OK", "result": None})
            write_response(handler, stop=self._stopping, response=response)
        return response.status

    # -- routes ----------------------------------------------------------------------------

    def _route(self, request: RecordedRequest) -> Response:
        path = request.path
        match = _AUTH_RE.match(path)
        if match:
            if request.method != "POST":
                return self._method_not_allowed(request, "POST")
            action = _ACTIONS[match.group("action")]
            if action == "refresh":
                return self._refresh(request)
            return self._login(request, action)
        if path == PUBLIC_KEY_PATH:
            if request.method not in ("GET", "HEAD"):
                return self._method_not_allowed(request, "GET")
            return Response(
                200, self.public_key_pem.encode("ascii"), content_type="text/plain;charset=UTF-8"
            )
        if path == TRACKER_SCRIPT_PATH:
            if request.method not in ("GET", "HEAD"):
                return self._method_not_allowed(request, "GET")
            return Response(
                200, tracker_script(), content_type="application/javascript;charset=UTF-8"
            )
        if path == PERSONAL_INFORMATION_PATH:
            if request.method not in ("GET", "HEAD"):
                return self._method_not_allowed(request, "GET")
            return self._personal_information(request)
        return error_response(404, "Not Found", path)

    @staticmethod
    def _method_not_allowed(request: RecordedRequest, allowed: str) -> Response:
        return error_response(
            405,
            f"Request method '{request.method}' not supported",
            request.path,
            headers={"Allow": allowed},
        )

    def _body_dict(self, request: RecordedRequest) -> dict[str, Any] | Response:
        if not isinstance(request.json, dict):
            return error_response(
                400, "JSON parse error: a JSON object body is required", request.path
            )
        return request.json

    def _check_api_key(self, data: dict[str, Any], path: str) -> Response | None:
        api_key = data.get("apiKey")
        if not isinstance(api_key, str) or not api_key:
            return error_response(
                400,
                "Validation failed",
                path,
                errors=[field_error("apiKey", "must not be blank", api_key)],
            )
        if not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            return error_response(403, "Invalid API key.", path)
        return None

    def _login(self, request: RecordedRequest, action: str) -> Response:
        path = request.path
        data = self._body_dict(request)
        if isinstance(data, Response):
            return data
        if action == "anonymous":
            return self._login_anonymous(request, data)
        errors = []
        provider = data.get("identityProvider")
        if not isinstance(provider, str) or not provider:
            errors.append(field_error("identityProvider", "must not be null", provider))
        elif provider not in PROVIDERS:
            errors.append(
                field_error("identityProvider", f"must be one of {list(PROVIDERS)}", provider)
            )
        if not isinstance(data.get("apiKey"), str) or not data.get("apiKey"):
            errors.append(field_error("apiKey", "must not be blank", data.get("apiKey")))
        if errors:
            return error_response(400, "Validation failed", path, errors=errors)
        denied = self._check_api_key(data, path)
        if denied is not None:
            return denied
        assert isinstance(provider, str)
        if provider == "SYNERISE":
            client_or_response = self._synerise_client(data, path)
        else:
            client_or_response = self._social_client(data, path, provider, action)
        if isinstance(client_or_response, Response):
            return client_or_response
        client = client_or_response
        uuid = data.get("uuid")
        if isinstance(uuid, str) and uuid:
            with self._lock:
                client.login_uuids.append(uuid)
        if client.condition is not None:
            if action == "conditional":
                return json_response(
                    200, {"status": client.condition, "conditions": list(client.conditions)}
                )
            if client.condition == "UNAUTHORIZED":
                return error_response(401, "Bad credentials", path)
            return error_response(403, f"Login requires {client.condition}.", path)
        if not client.activated:
            if action == "conditional":
                return json_response(
                    200,
                    {
                        "status": "ACTIVATION_REQUIRED",
                        "conditions": [{"type": "ACTIVATION", "email": client.email}],
                    },
                )
            return error_response(403, "Account is not activated.", path)
        token = self._take_token(client, origin=provider, realm="client")
        body = self._token_body(token, client)
        if action == "conditional":
            body = {"status": "SUCCESS", "conditions": [], **body}
        return json_response(200, body)

    def _synerise_client(self, data: dict[str, Any], path: str) -> FakeClient | Response:
        email, custom_id, password = data.get("email"), data.get("customId"), data.get("password")
        errors = []
        if not email and not custom_id:
            errors.append(field_error("email", "email or customId is required", email))
        if not isinstance(password, str) or not password:
            errors.append(field_error("password", "must not be blank", None))
        uuid = data.get("uuid")
        if self.require_uuid and (not isinstance(uuid, str) or not uuid):
            errors.append(field_error("uuid", "must not be blank", uuid))
        if errors:
            return error_response(400, "Validation failed", path, errors=errors)
        client = None
        if isinstance(email, str) and email:
            client = self._by_email.get(email.lower())
        elif isinstance(custom_id, str):
            client = self._by_custom_id.get(custom_id)
        if (
            client is None
            or client.password is None
            or not hmac.compare_digest(client.password.encode(), str(password).encode())
        ):
            return error_response(401, "Bad credentials", path)
        return client

    def _social_client(
        self, data: dict[str, Any], path: str, provider: str, action: str
    ) -> FakeClient | Response:
        token = data.get("identityProviderToken")
        if not isinstance(token, str) or not token:
            return error_response(
                400,
                "Validation failed",
                path,
                errors=[field_error("identityProviderToken", "must not be blank", None)],
            )
        if provider == "OAUTH" and self.oauth_mode is not None:
            found = self._oauth_identity(token, path)
            if isinstance(found, Response):
                return found
            identity: ProviderIdentity | None = found
        else:
            identity = self._provider_tokens.get(token)
        if identity is None or identity.provider != provider:
            return error_response(401, "Invalid identity provider token.", path)
        with self._lock:
            client = self._social.get((provider, identity.subject))
            if client is None:
                if action == "conditional":
                    return json_response(200, {"status": "REGISTRATION_REQUIRED", "conditions": []})
                client = FakeClient(
                    client_id=self._new_client_id(),
                    email=identity.email,
                    uuid=str(data.get("uuid") or uuid_module.uuid4()),
                    first_name=identity.first_name,
                    last_name=identity.last_name,
                    identity_provider=provider,
                    subject=identity.subject,
                    agreements=dict(data.get("agreements") or {}),
                    attributes=dict(data.get("attributes") or {}),
                    created_ms=int(time.time() * 1000),
                )
                self._clients[client.client_id] = client
                self._social[(provider, identity.subject)] = client
        return client

    def _login_anonymous(self, request: RecordedRequest, data: dict[str, Any]) -> Response:
        path = request.path
        uuid = data.get("uuid")
        errors = []
        if not isinstance(data.get("apiKey"), str) or not data.get("apiKey"):
            errors.append(field_error("apiKey", "must not be blank", data.get("apiKey")))
        if not isinstance(uuid, str) or not uuid:
            errors.append(field_error("uuid", "must not be blank", uuid))
        if errors:
            return error_response(400, "Validation failed", path, errors=errors)
        denied = self._check_api_key(data, path)
        if denied is not None:
            return denied
        assert isinstance(uuid, str)
        with self._lock:
            client = self._anonymous.get(uuid)
            if client is None:
                client = FakeClient(
                    client_id=self._new_client_id(),
                    uuid=uuid,
                    identity_provider="ANONYMOUS",
                    anonymous=True,
                    created_ms=int(time.time() * 1000),
                )
                self._clients[client.client_id] = client
                self._anonymous[uuid] = client
        token = self._take_token(client, origin="ANONYMOUS", realm="anonymous_client")
        return json_response(200, self._token_body(token, client))

    def _authenticate(self, request: RecordedRequest) -> tuple[str, FakeClient] | Response:
        """Check the Bearer token against the registry; returns (token, client) or a 401."""
        token = request.bearer
        if token is None:
            return error_response(
                401, "Full authentication is required to access this resource", request.path
            )
        record = self._tokens.get(token)
        if record is None:
            return error_response(401, "Invalid token.", request.path)
        problem = self._check_record(record)
        if problem is not None:
            return error_response(401, problem, request.path)
        return token, self._clients[record.client_id]

    def _refresh(self, request: RecordedRequest) -> Response:
        auth = self._authenticate(request)
        if isinstance(auth, Response):
            return auth
        token, client = auth
        data = self._body_dict(request)
        if isinstance(data, Response):
            return data
        denied = self._check_api_key(data, request.path)
        if denied is not None:
            return denied
        record = self._tokens[token]
        new_token = self._take_token(client, origin=record.origin, realm=record.realm)
        return json_response(200, self._token_body(new_token, client))

    def _personal_information(self, request: RecordedRequest) -> Response:
        auth = self._authenticate(request)
        if isinstance(auth, Response):
            return auth
        token, client = auth
        if self._tokens[token].realm != "client":
            return error_response(403, "Access denied for anonymous client.", request.path)
        return json_response(200, client.personal_information())

    # -- control API -----------------------------------------------------------------------

    def _control(self, request: RecordedRequest) -> Response:
        from .control import handle_control

        try:
            status, data = handle_control(self, request)
        except (KeyError, ValueError, TypeError) as exc:
            return json_response(400, {"error": f"{type(exc).__name__}: {exc}"})
        if status == 204:
            return Response(204, b"")
        return json_response(status, data)


#: Issuers of the ID tokens Google and Apple hand to apps (the fake only mimics their shape).
_ID_TOKEN_ISSUERS = {"GOOGLE": "https://accounts.google.com", "APPLE": "https://appleid.apple.com"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _provider_token_string(provider: str, subject: str, email: str | None) -> str:
    """Return a token shaped like the provider's: a JWT for Google and Apple ID tokens, an
    opaque string for Facebook and OAuth access tokens. Only the fake can vouch for it."""
    nonce = uuid_module.uuid4().hex
    issuer = _ID_TOKEN_ISSUERS.get(provider)
    if issuer is None:
        return f"fake-{provider.lower()}-{nonce}"
    header = {"alg": "RS256", "kid": "fake", "typ": "JWT"}
    payload = {"iss": issuer, "sub": subject, "aud": "fake-client-id", "jti": nonce}
    if email:
        payload["email"] = email
    parts = (json.dumps(header).encode(), json.dumps(payload).encode(), os.urandom(32))
    return ".".join(_b64url(part) for part in parts)
