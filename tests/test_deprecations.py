"""Renamed public names keep a deprecated alias for one release."""

from __future__ import annotations

import importlib

import pytest

from django_synerise import exceptions


@pytest.mark.parametrize(("old", "new"), [("FieldError", "FieldErrorDetail"),
                                          ("InvalidToken", "TokenVerificationError")])
def test_old_exception_names_warn_and_resolve(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use {new}"):
        value = getattr(exceptions, old)
    assert value is getattr(exceptions, new)


def test_from_import_of_an_old_name_warns() -> None:
    module = importlib.import_module("django_synerise.exceptions")
    with pytest.warns(DeprecationWarning):
        from django_synerise.exceptions import InvalidToken  # noqa: F401
    assert module.TokenVerificationError.__name__ == "TokenVerificationError"


def test_unknown_names_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError):
        exceptions.NoSuchThing  # noqa: B018
