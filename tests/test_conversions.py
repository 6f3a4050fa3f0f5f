"""Tests of ``django_synerise.conversions``: one definition of each setting conversion."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from django_synerise.conversions import (
    timeout_pair,
    to_float,
    to_int,
    to_seconds,
    to_str_list,
    to_timedelta,
)


@pytest.mark.parametrize(
    ("value", "expected"), [(3, 3.0), (2.5, 2.5), ("4", 4.0), (Decimal("1.5"), 1.5)]
)
def test_to_float(value: object, expected: float) -> None:
    assert to_float(value) == expected


@pytest.mark.parametrize(
    ("value", "error"), [(None, TypeError), ([1], TypeError), ("x", ValueError)]
)
def test_to_float_raises_as_float_does(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        to_float(value)


def test_to_int_truncates_and_raises_as_int_does() -> None:
    assert to_int(7.9) == 7
    assert to_int("12") == 12
    with pytest.raises(TypeError):
        to_int(None)


def test_seconds_accept_a_timedelta() -> None:
    assert to_seconds(timedelta(minutes=2)) == 120.0
    assert to_seconds(5) == 5.0
    assert to_timedelta(5) == timedelta(seconds=5)
    delta = timedelta(hours=1)
    assert to_timedelta(delta) is delta


@pytest.mark.parametrize(
    ("value", "expected"), [(7, (7.0, 7.0)), ((3.05, 10), (3.05, 10.0)), ([2, 5], (2.0, 5.0))]
)
def test_timeout_pair(value: object, expected: tuple[float, float]) -> None:
    assert timeout_pair(value) == expected


@pytest.mark.parametrize(("value", "error"), [(None, TypeError), ((1, 2, 3), ValueError)])
def test_timeout_pair_raises_on_a_non_pair(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        timeout_pair(value)


def test_to_str_list() -> None:
    assert to_str_list(None, encoding="ascii") == []
    assert to_str_list("one", encoding="ascii") == ["one"]
    assert to_str_list([b"a", "b"], encoding="ascii") == ["a", "b"]
    with pytest.raises(TypeError):
        to_str_list(5, encoding="ascii")
