"""Conversions of ``SYNERISE`` setting values to the types the package works with.

Each conversion is defined once here and used by :mod:`django_synerise.conf` (the typed
attributes of ``synerise_settings``), :mod:`django_synerise.checks` and the few call sites
that convert arguments of the same kind (a number of seconds or a ``timedelta``).

These functions convert, they do not validate: range and membership are the business of the
system checks. A value of the wrong type raises the ``TypeError`` or ``ValueError`` of the
underlying ``float()``/``int()`` call, exactly as the call sites' own conversions did.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import SupportsFloat, SupportsIndex, SupportsInt

__all__ = [
    "to_float",
    "to_int",
    "to_seconds",
    "to_str_list",
    "to_timedelta",
    "timeout_pair",
]


def to_float(value: object) -> float:
    """``float(value)`` for any value (``float()`` itself only accepts number-like types).

    Plain ints and floats are converted before the ``isinstance`` checks against the
    ``typing.Supports*`` protocols, which cost microseconds each (settings are converted on
    every read).

    :raises TypeError: ``value`` is not a number or a string.
    :raises ValueError: ``value`` is a string that is not a number.
    """
    if type(value) is float or type(value) is int:  # the usual case: no Protocol checks
        return float(value)
    if isinstance(value, (str, bytes, SupportsFloat, SupportsIndex)):
        return float(value)
    raise TypeError(
        f"float() argument must be a string or a real number, not {type(value).__name__!r}"
    )


def to_int(value: object) -> int:
    """``int(value)`` for any value (floats are truncated, as ``int()`` does).

    :raises TypeError: ``value`` is not a number or a string.
    :raises ValueError: ``value`` is a string that is not an integer.
    """
    if type(value) is int or type(value) is float:  # the usual case: no Protocol checks
        return int(value)
    if isinstance(value, (str, bytes, SupportsInt, SupportsIndex)):
        return int(value)
    raise TypeError(
        f"int() argument must be a string or a real number, not {type(value).__name__!r}"
    )


def to_seconds(value: object) -> float:
    """A number of seconds (int, float or numeric string) or a ``timedelta``, as float seconds.

    :raises TypeError: / :raises ValueError: as :func:`to_float`.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    return to_float(value)


def to_timedelta(value: object) -> timedelta:
    """A number of seconds or a ``timedelta`` (returned as is), as a ``timedelta``."""
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=to_float(value))


def timeout_pair(value: object) -> tuple[float, float]:
    """``(connect, read)`` seconds of a ``TIMEOUT``: one number means both, else a pair.

    :raises TypeError: ``value`` is neither a number nor an iterable of two numbers.
    :raises ValueError: ``value`` is an iterable of another length, or holds a non-number.
    """
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if type(value) is tuple and len(value) == 2:  # the usual case, without the ABC check
        return to_float(value[0]), to_float(value[1])
    if not isinstance(value, Iterable):
        raise TypeError(f"cannot unpack non-iterable {type(value).__name__} object")
    connect, read = value
    return to_float(connect), to_float(read)


def to_str_list(value: object, *, encoding: str) -> list[str]:
    """A list of strings from a list (or tuple) of ``str``/``bytes``, or from one lone
    ``str``/``bytes`` (one item); ``None`` and other empty values give ``[]``.

    ``bytes`` are decoded with ``encoding``; any other item is passed through ``str()``.
    """
    if not value:
        return []
    if isinstance(value, (str, bytes)):
        value = [value]
    if not isinstance(value, Iterable):
        raise TypeError(f"{type(value).__name__!r} object is not iterable")
    items: Iterable[object] = value
    return [item.decode(encoding) if isinstance(item, bytes) else str(item) for item in items]
