"""Serializers of the django-synerise endpoints: strict input, token-bearing output.

Input rules shared by every field: values must be JSON strings (numbers, booleans, lists are
refused rather than coerced), control characters (NUL, CR, LF, ...) are refused, lengths are
capped, and no error message repeats the submitted value.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.validators import EmailValidator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables
from rest_framework import serializers

from ..conf import synerise_settings
from ..jws import MalformedJWS, unverified_header
from ..providers import URL_PROVIDERS
from .parsers import json_depth

__all__ = [
    "AGREEMENTS_MAX_DEPTH",
    "ATTRIBUTES_MAX_DEPTH",
    "BoundedDictField",
    "EMAIL_MAX_LENGTH",
    "PASSWORD_MAX_LENGTH",
    "PROVIDERS",
    "ErrorSerializer",
    "FieldErrorSerializer",
    "LoginSerializer",
    "ProviderLoginSerializer",
    "StrictCharField",
    "TokenResponseSerializer",
    "WebSdkTokenSerializer",
    "check_provider_token",
    "normalize_email",
]

EMAIL_MAX_LENGTH = 254
PASSWORD_MAX_LENGTH = 1024
CUSTOM_ID_MAX_LENGTH = 255
DEVICE_ID_MAX_LENGTH = 255
MAX_AGREEMENTS = 16
MAX_ATTRIBUTES = 50
ATTRIBUTE_KEY_MAX_LENGTH = 128
ATTRIBUTE_VALUE_MAX_LENGTH = 1024
ATTRIBUTES_MAX_BYTES = 8192
#: ``agreements`` is a flat object of booleans; ``attributes`` a flat object of scalars.
AGREEMENTS_MAX_DEPTH = 1
ATTRIBUTES_MAX_DEPTH = 1

#: URL segment -> (Synerise ``identityProvider``, token kind), derived from
#: :mod:`django_synerise.providers`.
PROVIDERS: dict[str, tuple[str, str]] = URL_PROVIDERS

#: Asymmetric JWS algorithms a provider ID token may announce (never ``none`` or HMAC).
PROVIDER_JWT_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UUID = re.compile(
    r"\A[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}\Z"
)
_B64URL_SEGMENT = re.compile(r"\A[A-Za-z0-9_-]+\Z")
_OPAQUE_TOKEN = re.compile(r"\A[\x21-\x7e]+\Z")
_AGREEMENT_KEY = re.compile(r"\A[A-Za-z0-9_]{1,64}\Z")
_email_validator = EmailValidator(message=_("Enter a valid email address."))


class StrictCharField(serializers.CharField):
    """A ``CharField`` that accepts only JSON strings and refuses control characters.

    DRF's ``CharField`` turns ``123`` into ``"123"``; this one answers 400 instead.
    """

    default_error_messages = {
        "invalid": _("Not a valid string."),
        "control_characters": _("Control characters are not allowed."),
    }

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if _CONTROL.search(data):
            self.fail("control_characters")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """Accepts JSON ``true``/``false`` only (no ``"yes"``, ``1`` or ``"true"``)."""

    default_error_messages = {"invalid": _("Must be true or false.")}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class BoundedDictField(serializers.DictField):
    """A ``DictField`` whose nesting depth, number of keys and encoded size are capped.

    The caps are checked on the raw value *before* any child is validated, so a value nested
    thousands deep (or with a million keys) is refused in time linear in its size, without
    recursion: 400 with code ``max_depth`` (nested deeper than ``max_depth``; a flat object
    is depth 1) or ``max_size`` (more than ``max_items`` keys, or more than ``max_bytes``
    bytes once encoded as compact UTF-8 JSON).
    """

    default_error_messages = {
        "max_depth": _("Nested too deeply."),
        "max_size": _("Too large."),
    }

    def __init__(
        self,
        *,
        max_depth: int = 1,
        max_items: int | None = None,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            if json_depth(data, limit=self.max_depth) > self.max_depth:
                self.fail("max_depth")
            if self.max_items is not None and len(data) > self.max_items:
                self.fail("max_size")
            if self.max_bytes is not None and _encoded_size(data) > self.max_bytes:
                self.fail("max_size")
        return super().to_internal_value(data)


def _encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (lone surrogates count as 3 bytes)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def normalize_email(value: str) -> str:
    """Return ``value`` stripped with its domain lower-cased (the local part is kept).

    The throttle key folds the whole address (:func:`.throttling.account_key`); what Synerise
    receives keeps the local part as typed, since Synerise decides whether it is case-sensitive.
    """
    value = value.strip()
    local, sep, domain = value.rpartition("@")
    return f"{local}{sep}{domain.lower()}" if sep else value


def _validate_uuid(value: str) -> str:
    if not _UUID.match(value):
        raise serializers.ValidationError(_("Must be a UUID."), code="invalid")
    return value.lower()


def check_provider_token(token: str, kind: str) -> None:
    """Check the shape of a provider token before it is sent anywhere.

    ``kind == "jwt"`` (Google, Apple ID tokens): exactly three non-empty base64url segments
    whose header is a JSON object naming an asymmetric algorithm (``none`` and HMAC refused).
    ``kind == "opaque"`` (Facebook, OAuth access tokens): printable ASCII without spaces.
    Both: at most ``MAX_TOKEN_BYTES`` bytes. This is a shape check, not verification:
    Synerise verifies the token, and the local account is keyed on the Synerise client id it
    returns, never on claims read from this token.

    :raises serializers.ValidationError: (code ``invalid_token``) the shape is wrong.
    """
    invalid = serializers.ValidationError(
        _("Not a valid identity provider token."), code="invalid_token"
    )
    if len(token.encode("utf-8", "surrogatepass")) > synerise_settings.MAX_TOKEN_BYTES:
        raise serializers.ValidationError(
            _("The identity provider token is too long."), code="max_length"
        )
    if kind == "jwt":
        parts = token.split(".")
        if len(parts) != 3 or not all(_B64URL_SEGMENT.match(part) for part in parts):
            raise invalid
        try:
            header = unverified_header(token)
        except MalformedJWS:
            raise invalid from None
        if header.get("alg") not in PROVIDER_JWT_ALGORITHMS:
            raise invalid
    elif not _OPAQUE_TOKEN.match(token):
        raise invalid


class LoginSerializer(serializers.Serializer[Any]):
    """``POST auth/login/``: ``email`` xor ``custom_id``, ``password``, optional ``uuid``,
    ``device_id``. Unknown fields are ignored.

    ``validated_data`` holds the normalised values (``email`` stripped, domain lower-cased;
    ``uuid`` lower-cased), ready for :func:`django_synerise.services.login`.
    """

    email = StrictCharField(required=False, max_length=EMAIL_MAX_LENGTH, allow_blank=False)
    custom_id = StrictCharField(required=False, max_length=CUSTOM_ID_MAX_LENGTH, allow_blank=False)
    password = StrictCharField(
        max_length=PASSWORD_MAX_LENGTH,
        trim_whitespace=False,
        write_only=True,
        style={"input_type": "password"},
    )
    uuid = StrictCharField(required=False, max_length=36, help_text="Synerise profile UUID.")
    device_id = StrictCharField(required=False, max_length=DEVICE_ID_MAX_LENGTH)

    default_error_messages = {
        "identifier": _("Send either email or custom_id, not both."),
    }

    def validate_email(self, value: str) -> str:
        """Refuse non-ASCII and malformed addresses; normalise (see :func:`normalize_email`)."""
        value = normalize_email(value)
        if not value.isascii():
            raise serializers.ValidationError(_("Enter a valid email address."), code="invalid")
        _email_validator(value)
        return value

    def validate_uuid(self, value: str) -> str:
        """Require a UUID (hex, dashes optional)."""
        return _validate_uuid(value)

    @sensitive_variables("attrs")
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Require exactly one of ``email`` and ``custom_id``."""
        if ("email" in attrs) == ("custom_id" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": [self.error_messages["identifier"]]}, code="identifier"
            )
        return attrs


class ProviderLoginSerializer(serializers.Serializer[Any]):
    """``POST auth/login/<provider>/``: one serializer for every identity provider.

    The provider comes from the URL (serializer context ``provider``) and is checked against
    :data:`PROVIDERS`; the token shape is checked by :func:`check_provider_token`.
    ``validated_data`` gains ``identity_provider`` (the Synerise enum value).
    """

    identity_provider_token = StrictCharField(trim_whitespace=False, write_only=True)
    uuid = StrictCharField(required=False, max_length=36)
    device_id = StrictCharField(required=False, max_length=DEVICE_ID_MAX_LENGTH)
    agreements = BoundedDictField(
        child=StrictBooleanField(),
        required=False,
        max_depth=AGREEMENTS_MAX_DEPTH,
        max_items=MAX_AGREEMENTS,
        help_text="Marketing agreements as booleans (email, sms, push, ...): a flat object of "
        "at most 16 keys.",
    )
    attributes = BoundedDictField(
        child=serializers.JSONField(),
        required=False,
        max_depth=ATTRIBUTES_MAX_DEPTH,
        max_items=MAX_ATTRIBUTES,
        max_bytes=ATTRIBUTES_MAX_BYTES,
        help_text="Profile attributes for a first login: a flat object of up to 50 keys with "
        "scalar values, 8 KiB at most.",
    )

    default_error_messages = {
        "provider": _("Unknown identity provider."),
    }

    def validate_uuid(self, value: str) -> str:
        """Require a UUID (hex, dashes optional)."""
        return _validate_uuid(value)

    def validate_agreements(self, value: dict[str, bool]) -> dict[str, bool]:
        """Keys of letters, digits and ``_`` (depth and count are capped by the field)."""
        if not all(_AGREEMENT_KEY.match(k) for k in value):
            raise serializers.ValidationError(_("Invalid agreements."), code="invalid")
        return value

    def validate_attributes(self, value: dict[str, Any]) -> dict[str, Any]:
        """Keys of 1 to 128 characters without control characters, scalar values (strings
        <= 1024 characters, numbers, booleans, null). Depth, count and encoded size are
        capped by the field (codes ``max_depth``, ``max_size``)."""
        invalid = serializers.ValidationError(_("Invalid attributes."), code="invalid")
        for key, item in value.items():
            if (
                not key
                or len(key) > ATTRIBUTE_KEY_MAX_LENGTH
                or _CONTROL.search(key)
                or _SURROGATE.search(key)
            ):
                raise invalid
            if isinstance(item, str):
                if (
                    len(item) > ATTRIBUTE_VALUE_MAX_LENGTH
                    or "\x00" in item
                    or _SURROGATE.search(item)
                ):
                    raise invalid
            elif item is not None and not isinstance(item, (bool, int, float)):
                raise invalid
        return value

    @sensitive_variables("attrs", "token")
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Check the provider against :data:`PROVIDERS` and the token shape for it."""
        entry = PROVIDERS.get(str(self.context.get("provider", "")))
        if entry is None:
            raise serializers.ValidationError(
                {"provider": [self.error_messages["provider"]]}, code="invalid_choice"
            )
        identity_provider, kind = entry
        token = attrs["identity_provider_token"]
        try:
            check_provider_token(token, kind)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"identity_provider_token": exc.detail}) from None
        attrs["identity_provider"] = identity_provider
        return attrs


class TokenResponseSerializer(serializers.Serializer[Any]):
    """The body of a 200 from login, refresh and token (``Cache-Control: no-store``)."""

    token = serializers.CharField(help_text="The Synerise client JWT.")
    expires_at = serializers.DateTimeField(help_text="When the token expires (ISO 8601).")
    client_id = serializers.CharField(help_text="The Synerise client id.")
    user_id = serializers.CharField(help_text="The primary key of the Django user.")


class WebSdkTokenSerializer(serializers.Serializer[Any]):
    """The body of a 200 from ``GET tracking/token/`` (``Cache-Control: no-store``)."""

    token = serializers.CharField(
        help_text="An RS256 Web SDK token for ``SR.client.setAccessToken``; it cannot call "
        "Synerise's API."
    )
    expires_at = serializers.DateTimeField(help_text="When the token expires (ISO 8601).")
    expires_in = serializers.IntegerField(help_text="Its lifetime in seconds.")


class FieldErrorSerializer(serializers.Serializer[Any]):
    """One entry of ``errors`` in a 400 body."""

    field = serializers.CharField(
        help_text="Field name; nested fields use dots; "
        "``non_field_errors`` for the body as a whole."
    )
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error body: ``detail`` and a stable ``code`` (``errors`` on 400 only,
    ``conditions`` on the 403 of a conditional login only)."""

    detail = serializers.CharField()
    code = serializers.CharField()
    # A field named like Serializer.errors: this serializer only documents the body (schema).
    errors = FieldErrorSerializer(many=True, required=False)  # type: ignore[assignment]
    retry_after = serializers.IntegerField(required=False, help_text="On 429 only.")
    conditions = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="On the 403 of a conditional login only: Synerise's conditions, as sent.",
    )
