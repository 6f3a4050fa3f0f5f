"""Take over the rows of a claimed batch in one statement (PostgreSQL).

A Celery worker that receives a batch message must fence off a duplicate delivery before it
calls Synerise: it renews the lease of the rows still ``refreshing`` under the message's lease,
so a second delivery of the same message finds nothing. With the ORM that is a locking
``SELECT`` and an ``UPDATE`` in a transaction (four round trips with ``BEGIN`` and
``COMMIT``). On PostgreSQL :func:`take_returning` does the same in one statement: it locks the
rows in primary-key order (as the ``SELECT ... FOR UPDATE`` did), renews their lease and
returns them with their accounts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connections, router
from django.db.models import Field

from ..models import ClientToken, SyneriseAccount, TokenStatus

__all__ = ["supports_take_returning", "take_returning"]


def supports_take_returning() -> bool:
    """Whether the database that writes tokens runs :func:`take_returning` (PostgreSQL)."""
    return connections[router.db_for_write(ClientToken)].vendor == "postgresql"


def _fields(model: type[Any]) -> list[Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if isinstance(f, Field)]


def _instance(model: type[Any], alias: str, fields: list[Field[Any, Any]], values: Any) -> Any:
    """A model instance from raw column values, through each field's ``from_db_value``."""
    converted = []
    connection = connections[alias]
    for f, value in zip(fields, values, strict=True):
        convert = getattr(f, "from_db_value", None)
        converted.append(value if convert is None else convert(value, None, connection))
    return model.from_db(alias, [f.attname for f in fields], converted)


def take_returning(
    ids: list[int], lease_until: datetime, lease_seconds: float
) -> tuple[list[ClientToken], datetime | None, datetime | None]:
    """Renew the lease of the rows of ``ids`` still ``refreshing`` under ``lease_until`` and
    return them (accounts loaded, ``pk`` order) with the new lease, in one statement.

    The new lease is ``statement time + lease_seconds``, and always later than
    ``lease_until``, so it differs from the old one. Rows locked by another transaction are
    waited for and checked again once it ends (a duplicate delivery that renewed them first
    leaves nothing to take). Each row gets ``db_now`` (the statement's database time).

    :returns: the rows, the new lease and the statement's database time; ``([], None,
        None)`` when no row is still held under ``lease_until``.
    """
    alias = router.db_for_write(ClientToken)
    connection = connections[alias]
    quote = connection.ops.quote_name
    token_fields, account_fields = _fields(ClientToken), _fields(SyneriseAccount)
    token = quote(ClientToken._meta.db_table)
    account = quote(SyneriseAccount._meta.db_table)
    pk = quote(ClientToken._meta.get_field("id").column)
    account_pk = quote(SyneriseAccount._meta.get_field("id").column)
    account_id = quote(ClientToken._meta.get_field("account").column)
    status = quote(ClientToken._meta.get_field("status").column)
    lease = quote(ClientToken._meta.get_field("lease_until").column)
    returned = [f"{token}.{quote(f.column)}" for f in token_fields] + [
        f"{account}.{quote(f.column)}" for f in account_fields
    ]
    # Only quoted names are interpolated; every value is a parameter.
    sql = (
        f"WITH locked AS (SELECT {pk} FROM {token} "  # nosec B608 # noqa: S608
        f"WHERE {pk} = ANY(%s) AND {status} = %s AND {lease} = %s ORDER BY {pk} FOR UPDATE) "
        f"UPDATE {token} SET {lease} = GREATEST(STATEMENT_TIMESTAMP() + %s * INTERVAL '1 second', "
        f"%s + INTERVAL '1 microsecond') "
        f"FROM locked, {account} "
        f"WHERE {token}.{pk} = locked.{pk} AND {account}.{account_pk} = {token}.{account_id} "
        f"RETURNING STATEMENT_TIMESTAMP(), {', '.join(returned)}"
    )
    params: list[Any] = [
        list(ids),
        TokenStatus.REFRESHING.value,
        lease_until,
        lease_seconds,
        lease_until,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        records = cursor.fetchall()
    rows: list[ClientToken] = []
    split = len(token_fields)
    for record in records:
        row = _instance(ClientToken, alias, token_fields, record[1 : 1 + split])
        row.account = _instance(SyneriseAccount, alias, account_fields, record[1 + split :])
        # The attribute the ORM path's annotate(db_now=Now()) sets, read by the outcome events.
        setattr(row, "db_now", record[0])  # noqa: B010
        rows.append(row)
    if not rows:
        return [], None, None
    rows.sort(key=lambda row: row.pk)
    return rows, rows[0].lease_until, records[0][0]
