"""Reading the parts of a compact JWS without verifying it: the one hand-rolled decoder.

Nothing here checks a signature: what these functions return decides nothing about identity.
:mod:`django_synerise.verification` uses them for the JOSE header (to pick and pin the
algorithm) and for the ``exp`` of a token Synerise just issued (scheduling only); the API's
serializers for the header of an identity provider token. Pure Python, importable anywhere.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["MalformedJWS", "unverified_claims", "unverified_header"]


class MalformedJWS(ValueError):
    """A segment is not base64url-encoded JSON of an object."""


def _segment(token: str, index: int) -> dict[str, Any]:
    try:
        segment = token.split(".")[index]
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (IndexError, ValueError, binascii.Error, RecursionError) as exc:
        raise MalformedJWS(f"segment {index} is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise MalformedJWS(f"segment {index} is not a JSON object")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header (first segment) of ``token``, unverified.

    :raises MalformedJWS: it is not base64url JSON of an object.
    """
    return _segment(token, 0)


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims (second segment) of ``token``, unverified: never use them for identity.

    :raises MalformedJWS: there is no second segment, or it is not base64url JSON of an object.
    """
    return _segment(token, 1)
