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

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Field, Value
from django.db.models.expressions import Expression
from django.db.models.sql.compiler import SQLCompiler

__all__ = ["CaseByPk", "IfStatusIn"]


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


def _array_literal(values: list[Any]) -> Any:
    """``values`` as the text of a PostgreSQL array (``{1,NULL,"a \\"b\\""}``), sent as one
    string parameter and cast in the statement; the list itself for other types.

    Much cheaper to send than a list, which the driver adapts element by element in Python.
    """
    try:
        return "{" + ",".join(_array_element(value) for value in values) + "}"
    except TypeError:
        return values


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
        self.key: Any = F("pk")
        self.default: Any = default if hasattr(default, "resolve_expression") else Value(default)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.values)} rows, default={self.default!r})"

    def get_source_expressions(self) -> list[Any]:
        return [self.key, self.default]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        self.key, self.default = exprs

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
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
        if not self.values:
            return self.as_sql(compiler, connection, **extra_context)
        default_sql, default_params = compiler.compile(self.default)
        key_sql, key_params = compiler.compile(self.key)
        field = self.output_field
        key_type = self.key.output_field.db_type(connection)
        value_type = field.db_type(connection)
        if not key_type or not value_type:  # pragma: no cover - columns always have a type
            return self.as_sql(compiler, connection, **extra_context)
        keys = _array_literal(list(self.values))
        values = _array_literal(
            [field.get_db_prep_save(value, connection) for value in self.values.values()]
        )
        position = f"array_position(%s::{key_type}[], {key_sql})"
        sql = (
            f"CASE WHEN {position} IS NULL THEN {default_sql} "
            f"ELSE (%s::{value_type}[])[{position}] END"
        )
        params = (
            keys,
            *key_params,
            *default_params,
            values,
            keys,
            *key_params,
        )
        return sql, params


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
