"""Statements of the request path compiled by Django once per database, then run with new values.

Building a queryset and compiling it costs the ORM far more CPU than the database spends on a
one-row query: 0.8 to 2 ms a statement for the account lookups and the login's write on a
2-core machine, against a fraction of a millisecond for the round trip. The SQL of those
statements depends on their shape, not on their values. So each is written once, as a
function of its values, and built with a :class:`Slot` expression where each value goes;
Django compiles it once per database alias, and later runs send that SQL with every slot's
value prepared by the slot's field, as Django prepares a value of that field. Rows become model
instances through Django's own loaders (field converters, ``Model.from_db``, the
``select_related`` populators), so a caller gets what the queryset gives.

Before a plan is kept, the statement is also compiled the ORM's way with a sample value of
each slot's field: the SQL must be the same text with as many parameters. A statement that a
backend compiles differently for a value than for an expression (SQLite escapes an ``iexact``
value; a ``contains`` pattern; a field with its own placeholder), or any error while
compiling, is not cached on that database: there it runs through the ORM, built with the real
values, every time. A ``None`` value is sent as ``NULL`` where the ORM would write
``IS NULL``: builders use slots only for values that are never ``None`` in a lookup.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from django.db import DatabaseError, NotSupportedError, connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Expression, Field, Model, QuerySet

# Django's own select_related loader (ModelIterable's), not in the stubs; Django 6.1 added its
# fetch_mode argument. A change there makes compiling fail: the ORM path is kept, and
# tests/test_compiled.py, run on the lowest and the highest supported Django, fails.
from django.db.models.query import get_related_populators  # type: ignore[attr-defined]
from django.db.models.sql import UpdateQuery
from django.db.models.sql.compiler import SQLCompiler

try:
    from psycopg.types.datetime import TimestamptzLoader as _PsycopgTimestamptz
except ImportError:  # psycopg 2, or no PostgreSQL driver at all
    _PsycopgTimestamptz = None  # type: ignore[assignment,misc]

M = TypeVar("M", bound=Model)

logger = logging.getLogger(__name__)

#: Marks a slot's parameter in compiled SQL; never sent to a database.
_MARK = "\x00django-synerise-slot\x00"


def field_of(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` of ``model`` (what a slot is prepared by)."""
    field = model._meta.get_field(name)
    if not isinstance(field, Field):
        raise TypeError(f"{model.__name__}.{name} is not a concrete field")
    return field


def update_sql(queryset: QuerySet[Any, Any], values: Mapping[str, Any]) -> tuple[str, Any]:
    """The ``UPDATE`` that ``queryset.update(**values)`` sends, as SQL and parameters (on
    ``queryset``'s database); values may be expressions and :class:`Slot` expressions."""
    query = queryset.query.chain(UpdateQuery)
    assert isinstance(query, UpdateQuery)  # noqa: S101 - chain() returns the class asked for
    query.add_update_values(dict(values))
    query.annotations = {}
    sql, params = query.get_compiler(queryset.db).as_sql()
    return str(sql), params


def native_timestamps(cursor: Any) -> None:
    """Have ``cursor`` (a Django cursor on PostgreSQL with psycopg 3) load ``timestamptz``
    columns with psycopg's own loader (its C one, where installed) when that gives what
    Django's loader gives; otherwise leave it alone.

    Django registers a Python subclass of psycopg's loader that sets each value's ``tzinfo``
    to the connection's time zone: several microseconds a value, ten values a claimed row.
    psycopg's loader attaches the session's time zone itself, so where the session's zone is
    Django's (``TimeZone`` is UTC and ``USE_TZ`` is on, as Django configures it) the values
    are equal, with the same ``tzinfo`` object. Anything else (psycopg 2, another session
    zone, another backend) keeps Django's loader.
    """
    wrapper = getattr(cursor, "db", None)
    raw = getattr(cursor, "cursor", None)
    adapters = getattr(raw, "adapters", None)
    info = getattr(getattr(raw, "connection", None), "info", None)
    if wrapper is None or adapters is None or info is None or wrapper.vendor != "postgresql":
        return
    if _PsycopgTimestamptz is None or getattr(wrapper, "timezone", None) is not info.timezone:
        return
    adapters.register_loader("timestamptz", _PsycopgTimestamptz)


class _SlotParam:
    """The parameter a :class:`Slot` compiles to: filled with the value at run time."""

    __slots__ = ("slot",)

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def __str__(self) -> str:
        # Text a backend would send if it rewrote the parameter: found, and refused, by
        # _check_params.
        return f"{_MARK}{self.slot.name}"

    __repr__ = __str__


class Slot(Expression):
    """Where the value ``name`` goes in a compiled statement: one placeholder.

    ``field`` is the model field the value belongs to: at run time the value is prepared with
    its ``get_db_prep_save`` (``for_save``, the values of an ``UPDATE``) or
    ``get_db_prep_value`` (a lookup's right-hand side), as the ORM prepares it.
    """

    def __init__(self, name: str, field: Field[Any, Any], *, for_save: bool = False) -> None:
        super().__init__(output_field=field)
        self.name = name
        self.target = field
        self.for_save = for_save

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, list[Any]]:
        """One placeholder; its parameter marks this slot until the value fills it."""
        return "%s", [_SlotParam(self)]

    def prepare(self, value: Any, connection: BaseDatabaseWrapper) -> Any:
        """``value`` as the database driver takes it for this slot's field."""
        if hasattr(value, "resolve_expression"):
            raise TypeError(f"slot {self.name!r} takes a value, not an expression")
        if self.for_save:
            return self.target.get_db_prep_save(value, connection)
        return self.target.get_db_prep_value(value, connection, prepared=False)

    def sample(self) -> Any:
        """A value this slot takes, to compile its statement the ORM's way (``KeyError``: no
        sample for the field's type, so no slot of it)."""
        return _sample(self.target)


#: A value of each field type slots are used for, to compile a statement the ORM's way.
_SAMPLES: dict[str, Any] = {
    "CharField": "sample",
    "TextField": "sample",
    "EmailField": "sample@example.com",
    "SlugField": "sample",
    "BooleanField": True,
    "IntegerField": 1,
    "BigIntegerField": 1,
    "SmallIntegerField": 1,
    "PositiveIntegerField": 1,
    "PositiveBigIntegerField": 1,
    "PositiveSmallIntegerField": 1,
    "AutoField": 1,
    "BigAutoField": 1,
    "SmallAutoField": 1,
    "DateTimeField": datetime(2000, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
}


def _sample(field: Field[Any, Any]) -> Any:
    """A value of ``field``'s type (``KeyError``: no slot for this type)."""
    return _SAMPLES[field.get_internal_type()]


class Values:
    """What a statement's builder reads its values from: a :class:`Slot` for each name while
    the statement is compiled, the value itself when it runs through the ORM."""

    def __init__(self, values: Mapping[str, Any], slots: Mapping[str, Slot] | None = None) -> None:
        self._values = values
        self._slots = slots

    def __getitem__(self, name: str) -> Any:
        if self._slots is not None:
            return self._slots[name]
        return self._values[name]


def _check_params(params: Sequence[Any]) -> tuple[Any, ...]:
    """The compiled parameters, or ``ValueError`` when a slot's parameter was rewritten."""
    for param in params:
        if isinstance(param, str) and _MARK in param:
            raise ValueError("a slot's parameter was rewritten while compiling")
    return tuple(params)


def _check_same(compiled: tuple[str, Sequence[Any]], plain: tuple[str, Sequence[Any]]) -> None:
    """``ValueError`` unless the statement with slots is the one the ORM writes for values
    (Django puts an expression's placeholder in parentheses: ``= (%s)`` is ``= %s``)."""
    if _PARENTHESISED.sub("%s", compiled[0]) != plain[0] or len(compiled[1]) != len(plain[1]):
        raise ValueError("the statement's SQL depends on its values")


_PARENTHESISED = re.compile(r"\(%s\)")


def _fill(
    params: Sequence[Any], values: Mapping[str, Any], connection: BaseDatabaseWrapper
) -> list[Any]:
    """``params`` with each slot's parameter replaced by its value, prepared once per slot
    however often the slot occurs (an array of keys goes into every column's ``CASE``). A
    statement has one slot per name (:class:`Values` hands out the same one each time)."""
    prepared: dict[str, Any] = {}
    filled: list[Any] = []
    for p in params:
        if type(p) is not _SlotParam:
            filled.append(p)
            continue
        name = p.slot.name
        if name not in prepared:
            prepared[name] = p.slot.prepare(values[name], connection)
        filled.append(prepared[name])
    return filled


class _PerDatabase:
    """Plans cached per database alias and vendor; ``None`` caches "not compilable here"."""

    def __init__(self) -> None:
        self._plans: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, using: str, compile_plan: Callable[[str], Any]) -> Any:
        key = (using, connections[using].vendor)
        try:
            return self._plans[key]
        except KeyError:
            pass
        try:
            plan = compile_plan(using)
        except DatabaseError as exc:
            if not isinstance(exc, NotSupportedError):
                raise  # the database could not be asked (its version, say): try again next time
            logger.debug("Statement not compiled on database %r", using, exc_info=True)
            plan = None
        except Exception:  # noqa: BLE001 - any other failure: this database keeps the ORM path
            logger.debug("Statement not compiled on database %r", using, exc_info=True)
            plan = None
        with self._lock:
            return self._plans.setdefault(key, plan)


@dataclass(frozen=True)
class _SelectPlan:
    sql: str
    params: tuple[Any, ...]
    converters: list[tuple[int, tuple[list[Any], Any]]]
    model_start: int
    model_end: int
    init_list: list[str]
    populators: list[Any]
    #: ``model.from_db``, with the queryset's fetch mode on Django 6.1+.
    load: Callable[..., Any]
    #: Whether the fetch mode links the instances of one query as peers (Django 6.1+).
    track_peers: bool


class CompiledQuery(Generic[M]):
    """A ``SELECT`` of ``model`` written once as ``build(values)`` and compiled once per database.

    ``slots`` names each value and the field that prepares it. ``build`` receives a
    :class:`Values` and returns the queryset (ordered and sliced as wanted); it must use each
    value only where a parameter goes (a filter's right-hand side), never to choose the
    statement's shape.
    """

    def __init__(
        self,
        model: type[M],
        build: Callable[[Values], QuerySet[M, Any]],
        slots: Mapping[str, Field[Any, Any]],
    ) -> None:
        self.model = model
        self.build = build
        self.slot_fields = dict(slots)
        self._plans = _PerDatabase()

    def _compile(self, using: str) -> _SelectPlan:
        slots = {name: Slot(name, field) for name, field in self.slot_fields.items()}
        queryset = self.build(Values({}, slots)).using(using)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        samples = {name: _sample(field) for name, field in self.slot_fields.items()}
        plain = self.build(Values(samples)).using(using).query
        _check_same((sql, params), plain.get_compiler(using=using).as_sql())
        select, klass_info = compiler.select, compiler.klass_info
        converters = compiler.get_converters([expression for expression, _, _ in select])
        start = end = 0
        init_list: list[str] = []
        populators: list[Any] = []
        # Django 6.1 loads rows in a fetch mode (the queryset's); earlier versions have none.
        fetch_mode = getattr(queryset, "_fetch_mode", None)
        load: Callable[..., Any] = self.model.from_db
        if klass_info is not None:
            fields = klass_info["select_fields"]
            start, end = fields[0], fields[-1] + 1
            init_list = [column[0].target.attname for column in select[start:end]]
            if fetch_mode is None:
                populators = get_related_populators(klass_info, select, using)
            else:
                populators = get_related_populators(klass_info, select, using, fetch_mode)
                load = functools.partial(self.model.from_db, fetch_mode=fetch_mode)  # type: ignore[call-arg]
        return _SelectPlan(
            sql=sql,
            params=_check_params(params),
            converters=list(converters.items()),
            model_start=start,
            model_end=end,
            init_list=init_list,
            populators=populators,
            load=load,
            track_peers=bool(getattr(fetch_mode, "track_peers", False)),
        )

    def is_compiled(self, using: str) -> bool:
        """Whether this statement runs compiled on database ``using`` (compiling it now if it
        was not yet), rather than through the ORM."""
        return self._plans.get(using, self._compile) is not None

    def _rows(self, using: str, plan: _SelectPlan, values: Mapping[str, Any]) -> list[list[Any]]:
        connection = connections[using]
        with connection.cursor() as cursor:
            native_timestamps(cursor)
            cursor.execute(plan.sql, _fill(plan.params, values, connection))
            rows = [list(row) for row in cursor.fetchall()]
        for row in rows:
            for position, (functions, expression) in plan.converters:
                value = row[position]
                for convert in functions:
                    value = convert(value, expression, connection)
                row[position] = value
        return rows

    def instances(self, **values: Any) -> list[M]:
        """The model instances the queryset gives for ``values`` (related objects loaded)."""
        using = router.db_for_read(self.model)
        plan: _SelectPlan | None = self._plans.get(using, self._compile)
        if plan is None or not plan.init_list:
            return list(self.build(Values(values)).using(using))
        found: list[M] = []
        peers: list[weakref.ref[M]] = []
        for row in self._rows(using, plan, values):
            obj = plan.load(using, plan.init_list, row[plan.model_start : plan.model_end])
            if plan.track_peers:  # as Django's ModelIterable does
                peers.append(weakref.ref(obj))
                obj._state.peers = peers
            for populator in plan.populators:
                populator.populate(row, obj)
            found.append(obj)
        return found

    def first(self, **values: Any) -> M | None:
        """The first of :meth:`instances`, or ``None``."""
        found = self.instances(**values)
        return found[0] if found else None

    def column(self, **values: Any) -> list[Any]:
        """The first column of each row, for a ``values_list(..., flat=True)`` queryset."""
        using = router.db_for_read(self.model)
        plan: _SelectPlan | None = self._plans.get(using, self._compile)
        if plan is None:
            return list(self.build(Values(values)).using(using))
        return [row[0] for row in self._rows(using, plan, values)]


class CompiledSQL:
    """A statement written once as ``build(using, values)`` returning ``(sql, params)``, compiled
    once per database; ``build`` gets a :class:`Values` of slots and must not branch on them
    (it may give a slot to an expression that takes one, such as
    :meth:`django_synerise.expressions.CaseByPk.arrays`).

    ``slots`` maps each value's name to ``(field, for_save)`` or to a :class:`Slot`.

    :meth:`sql` returns the SQL and the parameters filled with ``values`` for the database
    ``using``; when the statement cannot be compiled there, ``build`` runs with the values.
    """

    def __init__(
        self,
        build: Callable[[str, Values], tuple[str, Sequence[Any]]],
        slots: Mapping[str, tuple[Field[Any, Any], bool] | Slot],
    ) -> None:
        self.build = build
        self.slots = {
            name: spec if isinstance(spec, Slot) else Slot(name, spec[0], for_save=spec[1])
            for name, spec in slots.items()
        }
        self._plans = _PerDatabase()

    def _compile(self, using: str) -> tuple[str, tuple[Any, ...]]:
        sql, params = self.build(using, Values({}, self.slots))
        samples = {name: slot.sample() for name, slot in self.slots.items()}
        _check_same((sql, params), self.build(using, Values(samples)))
        return sql, _check_params(params)

    def is_compiled(self, using: str) -> bool:
        """Whether this statement runs compiled on database ``using`` (compiling it now if it
        was not yet), rather than built by ``build`` on every call."""
        return self._plans.get(using, self._compile) is not None

    def sql(self, using: str, **values: Any) -> tuple[str, list[Any]]:
        """``(sql, params)`` of this statement with ``values``, for the database ``using``."""
        plan: tuple[str, tuple[Any, ...]] | None = self._plans.get(using, self._compile)
        if plan is None:
            sql, params = self.build(using, Values(values))
            return sql, list(params)
        return plan[0], _fill(plan[1], values, connections[using])


__all__ = [
    "CompiledQuery",
    "CompiledSQL",
    "Slot",
    "Values",
    "field_of",
    "native_timestamps",
    "update_sql",
]
