"""Claim and take over token rows in one statement (PostgreSQL).

Both leases of the refresh engine are a locking ``SELECT`` and an ``UPDATE`` in a transaction
with the ORM: four round trips with ``BEGIN`` and ``COMMIT``.

* A **claim** selects due (or requested) rows with ``FOR UPDATE SKIP LOCKED``, marks them
  ``refreshing`` and sets ``lease_until = database now + LEASE_SECONDS``
  (:func:`claim_returning`).
* A **take-over** is what a Celery worker does with a batch message before it calls
  Synerise: it renews the lease of the rows still ``refreshing`` under the message's lease,
  so a second delivery of the same message finds nothing (:func:`take_returning`).

On PostgreSQL each is one statement: a locking common table expression picks the rows (in the
same order and with the same locking as the ORM's ``SELECT ... FOR UPDATE``), an ``UPDATE``
writes them and ``RETURNING`` hands back the rows, their accounts and the database time.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.db.models import Field
from django.utils import timezone

from ..compiled import native_timestamps
from ..models import ClientToken, SyneriseAccount, TokenStatus
from ..relaxed_commit import relaxed_commit_column

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from django.db.models import QuerySet

__all__ = [
    "claim_returning",
    "claim_selected",
    "drop_back_references",
    "supports_take_returning",
    "take_returning",
]

#: What the statements return: the rows and their lease (``None`` when no row was written).
#: Each row carries ``db_now`` (the statement's database time, as the ORM path's
#: ``annotate(db_now=Now())``) and ``db_offset`` (that time minus this process's clock).
Taken = tuple[list[ClientToken], datetime | None]


def supports_take_returning() -> bool:
    """Whether the database that writes tokens runs these statements (PostgreSQL)."""
    return connections[router.db_for_write(ClientToken)].vendor == "postgresql"


def _fields(model: type[Any]) -> list[Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if isinstance(f, Field)]


class _Loader:
    """Builds instances of ``model`` from raw column values, through each field's
    ``from_db_value`` (looked up once, not per row)."""

    def __init__(self, model: type[Any], alias: str) -> None:
        self.model, self.alias = model, alias
        self.fields = _fields(model)
        self.names = [f.attname for f in self.fields]
        self.converters = [
            (i, getattr(f, "from_db_value"))  # noqa: B009
            for i, f in enumerate(self.fields)
            if hasattr(f, "from_db_value")
        ]

    def __call__(self, values: Any) -> Any:
        values = list(values)
        connection = connections[self.alias]
        for i, convert in self.converters:
            values[i] = convert(values[i], None, connection)
        return self.model.from_db(self.alias, self.names, values)


#: ``ClientToken.account``: its reverse side caches a claimed row on its account.
_ACCOUNT = ClientToken._meta.get_field("account")


def drop_back_references(rows: Iterable[ClientToken]) -> None:
    """Forget each row on its cached account (``account.token``, which assigning
    ``row.account`` or ``select_related`` caches along with it): every claim and take-over
    calls this on the rows it returns.

    A row and its account then form no reference cycle, so reference counting frees a
    batch's rows as soon as the batch is done; a cycle per token waits for a full run of the
    cyclic garbage collector, and a worker's resident memory climbs by its backlog.
    """
    back = _ACCOUNT.remote_field
    for row in rows:
        account = _ACCOUNT.get_cached_value(row, None)
        if account is not None and back.is_cached(account):
            back.delete_cached_value(account)


def _quote(name: str) -> str:
    return connections[router.db_for_write(ClientToken)].ops.quote_name(name)


def _table(model: type[Any] = ClientToken) -> str:
    """The quoted table of ``model``."""
    return _quote(model._meta.db_table)


def _column(name: str, model: type[Any] = ClientToken) -> str:
    """The quoted column of field ``name``."""
    return _quote(model._meta.get_field(name).column)


@functools.lru_cache(maxsize=8)
def _returning(alias: str) -> tuple[str, _Loader, _Loader]:
    """The constant part of :func:`_update_returning`'s statement on database ``alias``
    (``{picked}`` and ``{set_sql}`` left to fill), and the loaders of its rows."""
    load_token, load_account = _Loader(ClientToken, alias), _Loader(SyneriseAccount, alias)
    token, account = _table(), _table(SyneriseAccount)
    pk = _column("id")
    returned = [f"{token}.{_quote(f.column)}" for f in load_token.fields] + [
        f"{account}.{_quote(f.column)}" for f in load_account.fields
    ]
    # Only quoted names are interpolated here; the rest is compiled SQL and parameters.
    sql = (
        f"WITH picked ({pk}) AS ({{picked}}) "  # nosec B608 # noqa: S608
        f"UPDATE {token} SET {{set_sql}} FROM picked, {account} "
        f"WHERE {token}.{pk} = picked.{pk} "
        f"AND {account}.{_column('id', SyneriseAccount)} = {token}.{_column('account')} "
        f"RETURNING STATEMENT_TIMESTAMP(), {', '.join(returned)}"
    )
    return sql, load_token, load_account


def _update_returning(
    picked: str, picked_params: list[Any], set_sql: str, set_params: list[Any]
) -> Taken:
    """``WITH picked AS (<picked>) UPDATE token SET <set_sql> ... RETURNING`` the rows and their
    accounts; ``picked`` selects and locks the primary keys (a column named as the pk's).

    Run on its own (autocommit), the statement commits without waiting for the disk: a lease
    lost in a database crash costs nothing (:mod:`django_synerise.relaxed_commit`)."""
    alias = router.db_for_write(ClientToken)
    template, load_token, load_account = _returning(alias)
    sql = template.replace("{picked}", picked, 1).replace("{set_sql}", set_sql, 1)
    relaxed = relaxed_commit_column(connections[alias])
    if relaxed is not None:
        sql = f"{sql}, {relaxed}"
    with connections[alias].cursor() as cursor:
        native_timestamps(cursor)
        cursor.execute(sql, [*picked_params, *set_params])
        records = cursor.fetchall()
    if not records:
        return [], None
    offset = records[0][0] - timezone.now()
    rows: list[ClientToken] = []
    split, end = len(load_token.fields), len(load_token.fields) + len(load_account.fields)
    for record in records:
        row = load_token(record[1 : 1 + split])
        row.account = load_account(record[1 + split : 1 + end])
        # The attribute the ORM path's annotate(db_now=Now()) sets, read by the outcome events.
        setattr(row, "db_now", record[0])  # noqa: B010
        row.db_offset = offset
        rows.append(row)
    drop_back_references(rows)
    return rows, rows[0].lease_until


def claim_returning(
    queryset: QuerySet[ClientToken], limit: int | None, lease_seconds: float
) -> Taken:
    """Lock the rows of ``queryset`` not locked by anyone (``SKIP LOCKED``; at most ``limit``,
    oldest ``refresh_at`` first, else in ``pk`` order), mark them ``refreshing`` with
    ``lease_until = statement time + lease_seconds`` and return them, in one statement.

    :returns: the rows (accounts loaded, in the order they were picked) and the lease;
        ``([], None)`` when nothing could be claimed.
    """
    ordered = queryset.order_by("refresh_at", "pk") if limit is not None else queryset
    keys = ordered.values("pk")
    if limit is not None:
        keys = keys[:limit]
    # Compiled without select_for_update (which the compiler refuses outside a transaction);
    # the locking clause goes after ORDER BY and LIMIT, where PostgreSQL expects it.
    inner, params = keys.query.sql_with_params()
    rows, lease = claim_selected(inner, params, lease_seconds)
    if limit is not None:
        rows.sort(key=lambda row: (row.refresh_at, row.pk))
    return rows, lease


def claim_selected(keys_sql: str, params: Sequence[Any], lease_seconds: float) -> Taken:
    """:func:`claim_returning` of the rows whose primary keys ``keys_sql`` selects (a compiled
    ``SELECT`` of the ``pk`` column, with ``params``), returned in ``pk`` order."""
    picked = f"{keys_sql} FOR UPDATE OF {_table()} SKIP LOCKED"
    rows, lease = _update_returning(
        picked,
        list(params),
        f"{_column('status')} = %s, "
        f"{_column('lease_until')} = STATEMENT_TIMESTAMP() + %s * INTERVAL '1 second'",
        [TokenStatus.REFRESHING.value, lease_seconds],
    )
    rows.sort(key=lambda row: row.pk)
    return rows, lease


def take_returning(ids: list[int], lease_until: datetime, lease_seconds: float) -> Taken:
    """Renew the lease of the rows of ``ids`` still ``refreshing`` under ``lease_until`` and
    return them (accounts loaded, ``pk`` order) with the new lease, in one statement.

    The new lease is ``statement time + lease_seconds``, and always later than
    ``lease_until``, so it differs from the old one. Rows locked by another transaction are
    waited for and checked again once it ends (a duplicate delivery that renewed them first
    leaves nothing to take).

    :returns: the rows and the new lease; ``([], None)`` when no row is still held under
        ``lease_until``.
    """
    pk, lease = _column("id"), _column("lease_until")
    picked = (
        f"SELECT {pk} FROM {_table()} "  # nosec B608 # noqa: S608
        f"WHERE {pk} = ANY(%s) AND {_column('status')} = %s AND {lease} = %s "
        f"ORDER BY {pk} FOR UPDATE"
    )
    rows, renewed = _update_returning(
        picked,
        [list(ids), TokenStatus.REFRESHING.value, lease_until],
        f"{lease} = GREATEST(STATEMENT_TIMESTAMP() + %s * INTERVAL '1 second', "
        f"%s + INTERVAL '1 microsecond')",
        [lease_seconds, lease_until],
    )
    rows.sort(key=lambda row: row.pk)
    return rows, renewed
