"""Records FakeSynerise keeps: clients, provider identities, requests and issued tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from requests.structures import CaseInsensitiveDict

__all__ = ["FakeClient", "ProviderIdentity", "RecordedRequest", "TokenRecord"]


@dataclass(repr=False)
class FakeClient:
    """A Synerise client (profile) known to the fake. ``repr()`` never shows the password."""

    client_id: str
    email: str | None = None
    custom_id: str | None = None
    password: str | None = None
    uuid: str = ""
    first_name: str = ""
    last_name: str = ""
    identity_provider: str = "SYNERISE"
    subject: str | None = None
    activated: bool = True
    anonymous: bool = False
    agreements: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    generation: int = 0
    #: Conditional-login status this client is held in (``None``: none, sign-in succeeds):
    #: ``ACTIVATION_REQUIRED``, ``REGISTRATION_REQUIRED``, ``APPROVAL_REQUIRED``,
    #: ``TERMS_ACCEPTANCE_REQUIRED``, ``MFA_REQUIRED`` or ``UNAUTHORIZED``.
    condition: str | None = None
    #: The ``conditions`` sent with :attr:`condition`.
    conditions: list[dict[str, Any]] = field(default_factory=list)
    #: Every uuid a login of this client sent, oldest first (the profiles merged into it).
    login_uuids: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"FakeClient(client_id={self.client_id!r}, email={self.email!r}, "
            f"identity_provider={self.identity_provider!r})"
        )

    def personal_information(self) -> dict[str, Any]:
        """Return the body ``GET /v4/my-account/personal-information`` answers with."""
        return {
            "clientId": int(self.client_id),
            "email": self.email,
            "firstName": self.first_name or None,
            "lastName": self.last_name or None,
            "customId": self.custom_id,
            "uuid": self.uuid,
            "phone": None,
            "displayName": " ".join(p for p in (self.first_name, self.last_name) if p) or None,
            "agreements": dict(self.agreements),
            "attributes": dict(self.attributes),
        }

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly description without the password (used by the control API)."""
        return {
            "client_id": self.client_id,
            "email": self.email,
            "custom_id": self.custom_id,
            "uuid": self.uuid,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "identity_provider": self.identity_provider,
            "activated": self.activated,
            "condition": self.condition,
            "conditions": [dict(item) for item in self.conditions],
            "login_uuids": list(self.login_uuids),
        }


@dataclass(frozen=True, repr=False)
class ProviderIdentity:
    """The identity behind a provider token minted by :meth:`FakeSynerise.provider_token`."""

    provider: str
    subject: str
    email: str | None = None
    first_name: str = ""
    last_name: str = ""

    def __repr__(self) -> str:
        return f"ProviderIdentity(provider={self.provider!r}, subject={self.subject!r})"


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request the fake received. ``repr()`` shows only the method and path.

    ``headers`` is case-insensitive; ``json`` is the parsed body (None when not JSON);
    ``bearer`` is the token of an ``Authorization: Bearer`` header; ``peer`` is the client's
    (host, port), equal across requests sent over one kept-alive connection.
    """

    method: str
    path: str
    headers: CaseInsensitiveDict[str]
    json: Any
    body: bytes
    at: float
    query: str = ""
    peer: tuple[str, int] | None = None

    @property
    def bearer(self) -> str | None:
        """Return the Bearer token sent with the request, or None."""
        value = self.headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def __repr__(self) -> str:
        return f"RecordedRequest({self.method} {self.path})"


class TokenRecord:
    """Registry entry of a token the fake issued (validity is a dict lookup)."""

    __slots__ = ("client_id", "created_ms", "exp", "generation", "lifetime", "origin", "realm")

    def __init__(
        self,
        client_id: str,
        exp: int,
        created_ms: int,
        generation: int,
        origin: str,
        realm: str,
        lifetime: int,
    ) -> None:
        self.client_id = client_id
        self.exp = exp
        self.created_ms = created_ms
        self.generation = generation
        self.origin = origin
        self.realm = realm
        self.lifetime = lifetime
