"""Account lookups of a sign-in at a site's size: by index against reading the table.

Stores ``--accounts`` users, each linked to a Synerise account (``seed<i>@example.com``),
then times, interleaved in rounds in one process, the lookups a sign-in makes before calling
Synerise, each beside its naive form:

* the uuid stored for an e-mail (a SYNERISE sign-in without a uuid), by the account indexes
  of migration ``0007``, and with the planner's index scans turned off (what the lookup cost
  before those indexes: one pass over the account table);
* the local users an identifier may name (``SyneriseBackend``'s check before it sends a
  password), as :func:`django_synerise.backends.local_users_for` builds it (the ``UNION`` of
  the users matched on their own fields and the users of the matching accounts), and as one
  ``OR`` across the join (what it was: both whole tables on every password sign-in).

Then adds the indexes that ``docs/scaling.rst`` advises a large site to add on its user table
(``UPPER(username)``, ``UPPER(email)``) and times the local-users check both ways again.
Prints the median wall milliseconds per lookup (the database's work; the process's CPU is a
small part) and the ratios.

Run from the repository root::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/account_lookups.py [--accounts 200000] [--calls 30]

PostgreSQL only (``DATABASE_URL``), in a scratch test database that is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

if not os.environ.get("DATABASE_URL"):
    sys.exit("Set DATABASE_URL=postgres://user@host:port/name (PostgreSQL is required).")

import django  # noqa: E402

django.setup()

from bench_django import machine_line, seed_accounts, site_logging  # noqa: E402

site_logging()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Q  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from django_synerise.backends import MAX_LOCAL_MATCHES, local_users_for  # noqa: E402
from django_synerise.services.login import _stored_uuid  # noqa: E402

#: An identifier of one stored account, in the case a person types it.
IDENTIFIER = "Seed77@Example.com"


def _one_or_across_the_join(identifier: str) -> list[Any]:
    """The local-users check as one ``OR`` across the user and account tables (the naive
    form, and what ``local_users_for`` was)."""
    user_model = get_user_model()
    value = identifier.strip()
    query = (
        Q(**{f"{user_model.USERNAME_FIELD}__iexact": value})
        | Q(**{f"{user_model.get_email_field_name()}__iexact": value})
        | Q(synerise_account__email__iexact=value)
        | Q(synerise_account__custom_id=value)
    )
    return list(user_model._default_manager.filter(query)[:MAX_LOCAL_MATCHES])


def _without_index_scans(func: Callable[[], Any]) -> Callable[[], Any]:
    """``func`` with the planner's index and bitmap scans off: a read of the whole table."""

    def run() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SET enable_indexscan = off")
            cursor.execute("SET enable_bitmapscan = off")
        try:
            return func()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_indexscan")
                cursor.execute("RESET enable_bitmapscan")

    return run


def _ms(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return (time.perf_counter() - started) * 1000.0


def _compare(
    indexed: Callable[[], Any], naive: Callable[[], Any], calls: int
) -> tuple[float, float]:
    """Median wall ms of each, calls interleaved; both must answer the same."""
    assert indexed() == naive(), "the two forms disagree"
    fast: list[float] = []
    slow: list[float] = []
    for _ in range(calls):
        fast.append(_ms(indexed))
        slow.append(_ms(naive))
    return statistics.median(fast), statistics.median(slow)


def _add_user_indexes() -> None:
    """The indexes docs/scaling.rst advises on a large user table."""
    user_model = get_user_model()
    meta = user_model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    with connection.cursor() as cursor:
        for name, field in (
            ("bench_user_name_ci", user_model.USERNAME_FIELD),
            ("bench_user_email_ci", user_model.get_email_field_name()),
        ):
            column = quote(meta.get_field(field).column)
            cursor.execute(f"CREATE INDEX {quote(name)} ON {table} (UPPER({column}))")
        cursor.execute(f"ANALYZE {table}")


def run(accounts: int, calls: int) -> list[tuple[str, float, float]]:
    """Seed ``accounts`` and measure; returns (lookup, now ms, naive ms) rows. The naive form
    of the uuid lookup reads the whole account table; of the local-users check, one ``OR``
    across the join."""
    setup_test_environment()
    connection.settings_dict["CONN_MAX_AGE"] = None
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        seed_accounts(accounts)
        uuid = lambda: _stored_uuid(email=IDENTIFIER, custom_id=None)  # noqa: E731
        local = lambda: sorted(u.pk for u in local_users_for(IDENTIFIER))  # noqa: E731
        naive = lambda: sorted(u.pk for u in _one_or_across_the_join(IDENTIFIER))  # noqa: E731
        rows = [
            ("uuid by e-mail", *_compare(uuid, _without_index_scans(uuid), calls)),
            ("local users, user table not indexed", *_compare(local, naive, calls)),
        ]
        _add_user_indexes()
        rows.append(("local users, user table indexed", *_compare(local, naive, calls)))
        return rows
    finally:
        connection.creation.destroy_test_db(test_name, verbosity=0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200_000, help="users with accounts")
    parser.add_argument("--calls", type=int, default=30, help="calls of each form per lookup")
    args = parser.parse_args(argv)
    machine = machine_line(connection)
    rows = run(args.accounts, args.calls)
    print(f"account lookups: {args.accounts:,} users with Synerise accounts, {args.calls} calls "
          "each")
    print(machine)
    print(f"{'median wall ms per lookup':38} {'now':>9} {'naive':>9} {'ratio':>8}")
    for name, fast, slow in rows:
        print(f"{name:38} {fast:9.2f} {slow:9.2f} {slow / fast:7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
