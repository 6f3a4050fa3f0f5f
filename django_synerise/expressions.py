"""Query expressions of the package's writes (internal).

:class:`CaseByPk` gives each row of one ``UPDATE`` its own value, like a ``Case`` of
``When(pk=...)`` clauses, at the cost of a raw statement: Django's ``When(pk=...)`` resolves a
lookup per row and column (0.6 to 1.8 ms of CPU per row for the refresh engine's writes, and
a searched ``CASE`` the database evaluates several times slower; see
``benchmarks/bulk_write.py``), while this expression only prepares each value for the
database and compiles to the simple ``CASE pk WHEN ...``. Django's compiler still writes the
statement (quoting, the ``WHERE`` clause), so no SQL is assembled by hand.

:class:`IfStatusIn` is the same trade for a login's ``UPDATE`` of a token row: a ``Case`` of a
``When(Q(status__in=...) & ~Q(fingerprint=""))`` costs about 0.4 ms of CPU to resolve, twice
per login; this costs a few microseconds and compiles to the same ``CASE WHEN``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import NotSupportedError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField, F, Field, Value
from django.db.models.expressions import Expression
from django.db.models.sql.compiler import SQLCompiler

from .compiled import Slot

__all__ = ["ArraySlot", "CaseByPk", "IfStatusIn", "PkIn"]


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):  # int subclasses too (the driver's Int4, say)
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, str):
        text = value
    else:
        raise TypeError(type(value).__name__)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quoted(texts: list[str]) -> str:
    """``texts`` as quoted array elements, joined by commas."""
    joined = '","'.join(texts)
    if "\\" in joined or '"' in joined:
        joined = '","'.join(text.replace("\\", "\\\\").replace('"', '\\"') for text in texts)
    return '"' + joined + '"'


def _array_literal(values: list[Any]) -> Any:
    """``values`` as the text of a PostgreSQL array (``{1,NULL,"a \\"b\\""}``), sent as one
    string parameter and cast in the statement; the list itself for other types.

    Much cheaper to send than a list, which the driver adapts element by element in Python.
    A list of one type (the keys, a column of strings or of times) is written in one pass.
    """
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is int:
            return "{" + ",".join(map(int.__repr__, values)) + "}"
        if kind is str:
            return "{" + _quoted(values) + "}"
        if kind is datetime:
            return "{" + _quoted([value.isoformat(sep=" ") for value in values]) + "}"
    try:
        return "{" + ",".join(_array_element(value) for value in values) + "}"
    except TypeError:
        return values


class ArraySlot(Slot):
    """A list of values of ``field`` in a compiled statement, sent as one PostgreSQL array text
    (each value prepared for saving when ``for_save``): the keys or the values of
    :meth:`CaseByPk.arrays`, the keys of :class:`PkIn`."""

    def prepare(self, value: Any, connection: BaseDatabaseWrapper) -> Any:
        items = list(value)
        if self.for_save:
            items = [self.target.get_db_prep_save(item, connection) for item in items]
        return _array_literal(items)

    def sample(self) -> Any:
        return [super().sample()]


def _array_sql(
    compiler: SQLCompiler, connection: BaseDatabaseWrapper, items: list[Any] | ArraySlot
) -> tuple[str, list[Any]]:
    """One array parameter: ``items`` as an array text, or an :class:`ArraySlot`'s placeholder."""
    if isinstance(items, ArraySlot):
        sql, params = compiler.compile(items)
        return sql, list(params)
    return "%s", [_array_literal(items)]


class CaseByPk(Expression):
    """``CASE pk WHEN %s THEN %s ... ELSE <default> END``: ``values[pk]`` for each listed row.

    ``values`` maps primary keys to Python values, each prepared for saving by
    ``output_field`` (a model field, or an unbound field of the column's type) and sent as a
    parameter. ``default`` is an expression for the rows not listed (``F(name)`` keeps the
    column, ``Value(None)`` writes ``NULL``). An empty ``values`` compiles to the default
    alone. Usable wherever an expression is: ``update(col=...)`` or ``filter(col=...)``.
    On PostgreSQL the keys and values are sent as two arrays (:meth:`as_postgresql`).
    """

    def __init__(
        self, values: Mapping[Any, Any], *, default: Any, output_field: Field[Any, Any]
    ) -> None:
        super().__init__(output_field=output_field)
        self.values = dict(values)
        self.arrays: tuple[ArraySlot, ArraySlot] | None = None
        self.key: Any = F("pk")
        self.default: Any = default if hasattr(default, "resolve_expression") else Value(default)

    @classmethod
    def arrays_of(
        cls,
        keys: Sequence[Any] | ArraySlot,
        values: Sequence[Any] | ArraySlot,
        *,
        default: Any,
        output_field: Field[Any, Any],
    ) -> CaseByPk:
        """``values[i]`` for the row ``keys[i]``: two lists, or two :class:`ArraySlot` of a
        compiled statement (PostgreSQL only; the lists then come when it runs)."""
        if isinstance(keys, ArraySlot) and isinstance(values, ArraySlot):
            case = cls({}, default=default, output_field=output_field)
            case.arrays = (keys, values)
            return case
        if isinstance(keys, ArraySlot) or isinstance(values, ArraySlot):
            raise TypeError("keys and values are both slots or both lists")
        return cls(dict(zip(keys, values, strict=True)), default=default, output_field=output_field)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.values)} rows, default={self.default!r})"

    def get_source_expressions(self) -> list[Any]:
        return [self.key, self.default]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        self.key, self.default = exprs

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        if self.arrays is not None:
            raise NotSupportedError("CaseByPk.arrays_of() with slots compiles on PostgreSQL only.")
        default_sql, default_params = compiler.compile(self.default)
        if not self.values:
            return default_sql, tuple(default_params)
        key_sql, key_params = compiler.compile(self.key)
        field = self.output_field
        params: list[Any] = list(key_params)
        for pk, value in self.values.items():
            params.extend((pk, field.get_db_prep_save(value, connection)))
        params.extend(default_params)
        whens = " ".join(["WHEN %s THEN %s"] * len(self.values))
        return f"CASE {key_sql} {whens} ELSE {default_sql} END", tuple(params)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        """PostgreSQL: the keys and the values as two array parameters, whatever the number
        of rows. The statement's text then stays the same from batch to batch (the driver
        parses it once, not 2 placeholders per row and column every time)."""
        if not self.values and self.arrays is None:
            return self.as_sql(compiler, connection, **extra_context)
        default_sql, default_params = compiler.compile(self.default)
        key_sql, key_params = compiler.compile(self.key)
        field = self.output_field
        key_type = self.key.output_field.db_type(connection)
        value_type = field.db_type(connection)
        if not key_type or not value_type:  # pragma: no cover - columns always have a type
            return self.as_sql(compiler, connection, **extra_context)
        if self.arrays is not None:
            keys_sql, keys = _array_sql(compiler, connection, self.arrays[0])
            values_sql, values = _array_sql(compiler, connection, self.arrays[1])
        else:
            keys_sql, keys = _array_sql(compiler, connection, list(self.values))
            values_sql, values = _array_sql(
                compiler,
                connection,
                [field.get_db_prep_save(value, connection) for value in self.values.values()],
            )
        position = f"array_position({keys_sql}::{key_type}[], {key_sql})"
        sql = (
            f"CASE WHEN {position} IS NULL THEN {default_sql} "
            f"ELSE ({values_sql}::{value_type}[])[{position}] END"
        )
        params = (
            *keys,
            *key_params,
            *default_params,
            *values,
            *keys,
            *key_params,
        )
        return sql, params


class PkIn(Expression):
    """The condition "the row's primary key is one of ``keys``", for ``filter()``.

    ``pk = ANY(%s::<type>[])`` on PostgreSQL: one array parameter whatever the number of keys
    (the statement's text stays the same), or an :class:`ArraySlot` of a compiled statement;
    ``pk IN (%s, ...)`` elsewhere. No keys match no row.
    """

    conditional = True

    def __init__(self, keys: Sequence[Any] | ArraySlot) -> None:
        super().__init__(output_field=BooleanField())
        self.keys = keys if isinstance(keys, ArraySlot) else list(keys)
        self.key: Any = F("pk")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.keys!r})"

    def get_source_expressions(self) -> list[Any]:
        return [self.key]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        (self.key,) = exprs

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        if isinstance(self.keys, ArraySlot):
            raise NotSupportedError("PkIn with a slot compiles on PostgreSQL only.")
        if not self.keys:
            raise EmptyResultSet
        key_sql, key_params = compiler.compile(self.key)
        placeholders = ", ".join(["%s"] * len(self.keys))
        return f"{key_sql} IN ({placeholders})", (*key_params, *self.keys)

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        if not self.keys:
            raise EmptyResultSet
        key_sql, key_params = compiler.compile(self.key)
        key_type = self.key.output_field.db_type(connection)
        keys_sql, keys = _array_sql(compiler, connection, self.keys)
        return f"{key_sql} = ANY({keys_sql}::{key_type}[])", (*key_params, *keys)


class IfStatusIn(Expression):
    """``CASE WHEN status IN (%s, ...) AND fingerprint <> '' THEN <then> ELSE <default> END``.

    For the row being updated: ``then`` when its ``status`` is one of ``statuses`` and it
    holds a token (a non-empty ``fingerprint``), else ``default`` (both expressions, or values
    wrapped in ``Value``). Columns are compiled by Django (quoted, with the table).
    """

    def __init__(
        self,
        statuses: Sequence[str],
        *,
        then: Any,
        default: Any,
        output_field: Field[Any, Any],
    ) -> None:
        super().__init__(output_field=output_field)
        self.statuses = tuple(str(status) for status in statuses)
        self.status: Any = F("status")
        self.fingerprint: Any = F("fingerprint")
        self.then: Any = then if hasattr(then, "resolve_expression") else Value(then)
        self.default: Any = default if hasattr(default, "resolve_expression") else Value(default)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.statuses!r}, then={self.then!r})"

    def get_source_expressions(self) -> list[Any]:
        return [self.status, self.fingerprint, self.then, self.default]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        self.status, self.fingerprint, self.then, self.default = exprs

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        status_sql, status_params = compiler.compile(self.status)
        fingerprint_sql, fingerprint_params = compiler.compile(self.fingerprint)
        then_sql, then_params = compiler.compile(self.then)
        default_sql, default_params = compiler.compile(self.default)
        placeholders = ", ".join(["%s"] * len(self.statuses))
        sql = (
            f"CASE WHEN {status_sql} IN ({placeholders}) AND {fingerprint_sql} <> %s "
            f"THEN {then_sql} ELSE {default_sql} END"
        )
        params = (
            *status_params,
            *self.statuses,
            *fingerprint_params,
            "",
            *then_params,
            *default_params,
        )
        return sql, params
