"""The ``/__fake__/`` control API of FakeSynerise, for driving it from another process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fake import FakeSynerise, RecordedRequest

__all__ = ["handle_control"]

_FAULT_FIELDS = (
    "status",
    "fault",
    "times",
    "path",
    "method",
    "retry_after",
    "body",
    "headers",
    "delay",
)


def _body(request: RecordedRequest) -> dict[str, Any]:
    data = request.json if request.json is not None else {}
    if not isinstance(data, dict):
        raise ValueError("a JSON object body is required")
    return data


def handle_control(fake: FakeSynerise, request: RecordedRequest) -> tuple[int, Any]:
    """Run one control API request; returns (status, JSON data).

    Raises KeyError / ValueError / TypeError on bad input (the caller answers 400).
    """
    route = (request.method, request.path.rstrip("/"))
    if route == ("POST", "/__fake__/clients"):
        data = _body(request)
        client = fake.add_client(
            email=data.get("email"),
            password=data.get("password"),
            custom_id=data.get("custom_id"),
            first_name=data.get("first_name") or "",
            last_name=data.get("last_name") or "",
            uuid=data.get("uuid"),
            activated=bool(data.get("activated", True)),
            condition=data.get("condition"),
            conditions=data.get("conditions"),
        )
        return 201, client.as_dict()
    if route == ("POST", "/__fake__/conditions"):
        data = _body(request)
        client = fake.set_condition(
            data["client_id"], data.get("status"), conditions=data.get("conditions")
        )
        return 200, client.as_dict()
    if route == ("GET", "/__fake__/clients"):
        return 200, {"clients": [c.as_dict() for c in fake.clients]}
    if route == ("POST", "/__fake__/provider-tokens"):
        data = _body(request)
        token = fake.provider_token(
            data["provider"],
            subject=data.get("subject"),
            email=data.get("email"),
            first_name=data.get("first_name") or "",
            last_name=data.get("last_name") or "",
        )
        return 201, {"identity_provider_token": token}
    if route == ("POST", "/__fake__/tokens"):
        data = _body(request)
        count = int(data.get("count", 1))
        if not 1 <= count <= 10_000:
            raise ValueError("count must be between 1 and 10000")
        lifetime = data.get("lifetime")
        lifetime = None if lifetime is None else int(lifetime)
        realm = str(data.get("realm", "client"))
        tokens = [fake.issue_token(data["client_id"], lifetime, realm) for _ in range(count)]
        return 201, {"tokens": tokens}
    if route == ("POST", "/__fake__/presign"):
        data = _body(request)
        client_ids = data["client_ids"]
        if not isinstance(client_ids, list):
            raise TypeError("client_ids must be a list")
        wanted = data.get("count")
        signed = fake.presign_tokens(client_ids, None if wanted is None else int(wanted))
        return 200, {"signed": signed}
    if route == ("POST", "/__fake__/revoke"):
        fake.revoke_client(_body(request)["client_id"])
        return 204, None
    if route == ("POST", "/__fake__/faults"):
        data = _body(request)
        unknown = set(data) - set(_FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kwargs = {k: data[k] for k in _FAULT_FIELDS if k in data and k != "status"}
        rule = fake.inject(data.get("status"), **kwargs)
        return 201, {"fault": rule.as_dict()}
    if route == ("GET", "/__fake__/faults"):
        return 200, {"faults": [rule.as_dict() for rule in fake.faults.rules()]}
    if route == ("DELETE", "/__fake__/faults"):
        fake.reset_faults()
        return 204, None
    if route == ("GET", "/__fake__/stats"):
        return 200, fake.stats()
    if route == ("POST", "/__fake__/reset"):
        fake.clear_requests()
        fake.reset_faults()
        return 204, None
    if route == ("POST", "/__fake__/oauth"):
        data = _body(request)
        unknown = set(data) - {"mode", "jwks_url", "userinfo_url", "issuer", "audience", "jwks_ttl"}
        if unknown:
            raise ValueError(f"unknown oauth fields: {sorted(unknown)}")
        fake.configure_oauth(
            data.get("mode"),
            jwks_url=data.get("jwks_url"),
            userinfo_url=data.get("userinfo_url"),
            issuer=data.get("issuer"),
            audience=data.get("audience"),
            jwks_ttl=float(data.get("jwks_ttl") or 0.0),
        )
        return 200, _config(fake)
    if route == ("GET", "/__fake__/config"):
        return 200, _config(fake)
    if route == ("POST", "/__fake__/config"):
        data = _body(request)
        if "token_lifetime" in data:
            fake.token_lifetime = int(data["token_lifetime"])
        if "latency" in data:
            latency = float(data["latency"])
            if latency < 0:
                raise ValueError("latency must be >= 0")
            fake.latency = latency
        return 200, _config(fake)
    return 404, {"error": f"no control route {request.method} {request.path}"}


def _config(fake: FakeSynerise) -> dict[str, Any]:
    return {
        "url": fake.url,
        "api_key": fake.api_key,
        "token_lifetime": fake.token_lifetime,
        "latency": fake.latency,
        "business_profile_id": fake.business_profile_id,
        "presign": fake.presign,
        "oauth": {
            "mode": fake.oauth_mode,
            "jwks_url": fake.oauth_jwks_url,
            "userinfo_url": fake.oauth_userinfo_url,
            "issuer": fake.oauth_issuer,
            "audience": fake.oauth_audience,
            "jwks_ttl": fake.oauth_jwks_ttl,
        },
    }
