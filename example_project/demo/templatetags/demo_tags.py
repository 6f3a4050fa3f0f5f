"""Template filters of the demo pages."""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_LITERAL = re.compile(r"``(.+?)``")


@register.filter
def literals(text: object) -> SafeString:
    """Escape ``text`` and show its reStructuredText ````literals```` as ``<code>``."""
    escaped = str(escape(str(text or "")))
    return mark_safe(_LITERAL.sub(r"<code>\1</code>", escaped))  # noqa: S308 - escaped above
