"""A strict, size-capped JSON parser for the django-synerise endpoints."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

__all__ = ["StrictJSONParser"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key in object")
        result[key] = value
    return result


def max_body_bytes() -> int | None:
    """Return ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (``None`` disables the cap)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class StrictJSONParser(BaseParser):
    """Parse ``application/json`` bodies, refusing what DRF's ``JSONParser`` lets through.

    - bodies larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` raise Django's
      :class:`~django.core.exceptions.RequestDataTooBig` (answered with 413) without being
      read in full — DRF reads the request stream directly and would skip Django's own check;
    - invalid UTF-8, invalid JSON, ``NaN``/``Infinity``, duplicate object keys and nesting deep
      enough to exhaust the recursion limit raise :class:`~rest_framework.exceptions.ParseError`
      (400) instead of a 500.

    The error text never repeats the body.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        """Return the decoded JSON document.

        :raises RequestDataTooBig: the body is larger than the configured cap.
        :raises ParseError: the body is not one strict JSON document.
        """
        limit = max_body_bytes()
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("JSON parse error - the body is not valid UTF-8.") from None
        try:
            return json.loads(
                text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates
            )
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        except ValueError as exc:
            # json.JSONDecodeError messages name a position, never the content.
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ParseError(f"JSON parse error - {reason}.") from None
