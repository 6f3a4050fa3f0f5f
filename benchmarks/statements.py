"""CPU of the request path's statements: compiled once per database against built every time.

Each statement of :mod:`django_synerise.compiled` that a login, Bearer authentication or a
refresh sends is run two ways, interleaved in rounds in one process: built and compiled by the
ORM on every call (what the code did before; the statement's own builder, given the values),
and compiled once and run with new values (what it does now). Both run the same SQL against
the same rows, so the difference is the ORM's building and compiling. Prints the median CPU
microseconds per call of each, and their ratio.

Run from the repository root::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/statements.py [--calls 500] [--rounds 5]

Uses ``tests.settings`` (in-memory SQLite) unless ``DJANGO_SETTINGS_MODULE`` is set;
``DATABASE_URL`` selects PostgreSQL, in a scratch test database that is dropped at the end.
Statements a database does not compile or run (SQLite's ``iexact``, the arrays of the refresh
write, the login's one-statement write) are listed as such.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from bench_django import site_logging  # noqa: E402

site_logging()

from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

from django_synerise.compiled import CompiledQuery, CompiledSQL, Values  # noqa: E402
from django_synerise.models import SyneriseAccount  # noqa: E402
from tests.factories import make_account, make_token  # noqa: E402

login = importlib.import_module("django_synerise.services.login")
activity = importlib.import_module("django_synerise.services.activity")
tokens = importlib.import_module("django_synerise.services.tokens")
refresh = importlib.import_module("django_synerise.services.refresh")


def _cpu_us(func: Callable[[], Any], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        func()
    return (time.process_time() - started) * 1e6 / calls


def _query_pair(query: CompiledQuery[Any], values: dict[str, Any]) -> tuple[Any, Any] | None:
    if not query.is_compiled("default"):
        return None
    return (lambda: list(query.build(Values(values))), lambda: query.instances(**values))


def _sql_pair(statement: CompiledSQL, values: dict[str, Any]) -> tuple[Any, Any] | None:
    if not statement.is_compiled("default"):
        return None

    def run(sql: str, params: Any) -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute(sql, params)

    return (
        lambda: run(*statement.build("default", Values(values))),
        lambda: run(*statement.sql("default", **values)),
    )


def _cases() -> dict[str, tuple[Any, Any] | None]:
    """The statements and the values to run them with (rows seeded first)."""
    now = timezone.now()
    account = make_account(
        email="bench@example.com", uuid="0f8fad5b-d9cb-469f-a165-70867728950e", last_login_at=now
    )
    row = make_token(account)
    for _ in range(200):
        make_token(make_account())
    fields = tuple(login._LOGIN_FIELDS)
    account_values = {f"account.{name}": getattr(account, name) for name in fields}
    token_values = {f"token.{name}": getattr(row, name) for name in tokens.TOKEN_FIELDS}
    one = [row.pk]
    hundred = list(SyneriseAccount.objects.values_list("token__pk", flat=True).order_by("pk")[:100])

    def successes(pks: list[int]) -> dict[str, Any]:
        # Rows that are not held by this lease: the database finds and writes nothing, so
        # the figure is building, sending and planning the statement.
        columns = {name: [getattr(row, name, None) for _ in pks] for name in refresh._TOKEN_COLUMNS}
        return {
            "pks": pks,
            "versions": [1] * len(pks),
            "lease_until": now + timedelta(minutes=1),
            "now": now,
            **columns,
        }

    return {
        "login: account by client id": _query_pair(
            login._ACCOUNT_BY_CLIENT_ID, {"client_id": account.client_id}
        ),
        "login: stored uuid by e-mail": _query_pair(
            login._UUIDS_BY_EMAIL, {"value": account.email}
        ),
        # One statement on PostgreSQL only (tokens._one_statement); elsewhere a transaction.
        "login: account and token write": None
        if connection.vendor != "postgresql"
        else _sql_pair(
            tokens._store_statement(SyneriseAccount, fields),
            {
                "account": account.pk,
                "now": now,
                "grace_until": now + timedelta(seconds=60),
                **account_values,
                **token_values,
            },
        ),
        "Bearer auth: active account and token": _query_pair(
            activity._ACTIVE_ACCOUNT_BY_CLIENT_ID, {"client_id": account.client_id}
        ),
        "refresh: claim key query (1 row)": _sql_pair(
            refresh._CLAIMABLE_ROW_KEYS, {"pk": row.pk, "version": row.version}
        ),
        "refresh write, 1 row": _sql_pair(refresh._SUCCESSES_UPDATE, successes(one)),
        "refresh write, 100 rows": _sql_pair(refresh._SUCCESSES_UPDATE, successes(hundred)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    setup_test_environment()
    connection.settings_dict["CONN_MAX_AGE"] = None
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        cases = _cases()
        load = os.getloadavg()[0]
        print(
            f"statements on {connection.vendor}: median CPU µs per call of {args.rounds} "
            f"interleaved rounds x {args.calls} calls, load average {load:.1f}"
        )
        print(f"{'':40} {'ORM each call':>14} {'compiled':>10} {'ratio':>7}")
        for name, pair in cases.items():
            if pair is None:
                print(f"{name:40} {'not compiled or not used on this database':>45}")
                continue
            orm, compiled = pair
            orm(), compiled()  # warm up: plans, connection
            built, kept = [], []
            for _ in range(args.rounds):
                built.append(_cpu_us(orm, args.calls))
                kept.append(_cpu_us(compiled, args.calls))
            before, after = statistics.median(built), statistics.median(kept)
            print(f"{name:40} {before:14.1f} {after:10.1f} {after / before:6.2f}x")
        _timestamps(args.calls, args.rounds)
    finally:
        connection.creation.destroy_test_db(test_name, verbosity=0)
    return 0


def _timestamps(calls: int, rounds: int) -> None:
    """The claim's rows as its ``RETURNING`` loads them: 100 token rows (their ``timestamptz``
    columns among them) through Django's loader and through psycopg's
    (:func:`~django_synerise.compiled.native_timestamps`), interleaved."""
    if connection.vendor != "postgresql":
        print("timestamps: PostgreSQL only")
        return
    from django_synerise.compiled import native_timestamps
    from django_synerise.models import ClientToken

    table = connection.ops.quote_name(ClientToken._meta.db_table)
    sql = f"SELECT * FROM {table} ORDER BY 1 LIMIT 100"  # noqa: S608 - a quoted table name

    def read(native: bool) -> Callable[[], Any]:
        def run() -> Any:
            with connection.cursor() as cursor:
                if native:
                    native_timestamps(cursor)
                cursor.execute(sql)
                return cursor.fetchall()

        return run

    django_loader, psycopg_loader = read(False), read(True)
    assert django_loader() == psycopg_loader()  # noqa: S101 - the same values either way
    stamps = sum(
        f.get_internal_type() == "DateTimeField" for f in ClientToken._meta.concrete_fields
    )
    reads = max(1, calls // 5)  # 100 rows a read: a fifth of the calls of one-row statements
    slow = statistics.median(_cpu_us(django_loader, reads) for _ in range(rounds))
    fast = statistics.median(_cpu_us(psycopg_loader, reads) for _ in range(rounds))
    print(
        f"100 token rows ({stamps} timestamptz each): Django's loader {slow:.1f} µs, "
        f"psycopg's {fast:.1f} µs, {fast / slow:.2f}x"
    )


if __name__ == "__main__":
    raise SystemExit(main())
