"""A strict, size-capped JSON parser for the django-synerise endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

__all__ = ["MAX_JSON_DEPTH", "StrictJSONParser", "json_depth"]

#: Deepest nesting of arrays and objects a request body may have (a flat object is depth 1).
MAX_JSON_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key in object")
        result[key] = value
    return result


def json_depth(value: Any, *, limit: int) -> int:
    """Return how deeply ``value`` nests lists and dicts, counting at most to ``limit + 1``.

    A scalar is depth 0, ``[]`` and ``{"a": 1}`` depth 1, ``[[1]]`` depth 2. The walk is
    iterative (no recursion, whatever the input) and stops as soon as ``limit`` is exceeded,
    so it costs at most one visit per node of a document already bounded in size.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def max_body_bytes() -> int | None:
    """Return ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (``None`` disables the cap)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class StrictJSONParser(BaseParser):
    """Parse ``application/json`` bodies, refusing what DRF's ``JSONParser`` lets through.

    - bodies larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` raise Django's
      :class:`~django.core.exceptions.RequestDataTooBig` (answered with 413) without being
      read in full — DRF reads the request stream directly and would skip Django's own check;
    - invalid UTF-8, invalid JSON, ``NaN``/``Infinity``, duplicate object keys and arrays or
      objects nested deeper than :attr:`max_depth` raise
      :class:`~rest_framework.exceptions.ParseError` (400, code ``parse_error``) instead of a
      500. Nothing deeper than :attr:`max_depth` ever reaches a serializer, so no later step
      (validation, re-encoding, logging) can exhaust the recursion limit on it.

    The error text never repeats the body.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer
    #: Deepest accepted nesting of arrays and objects (:data:`MAX_JSON_DEPTH`).
    max_depth: int = MAX_JSON_DEPTH

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
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
        too_deep = ParseError("JSON parse error - the document is nested too deeply.")
        try:
            document = json.loads(
                text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates
            )
        except RecursionError:
            raise too_deep from None
        except ValueError as exc:
            # json.JSONDecodeError messages name a position, never the content.
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ParseError(f"JSON parse error - {reason}.") from None
        if json_depth(document, limit=self.max_depth) > self.max_depth:
            raise too_deep
        return document
