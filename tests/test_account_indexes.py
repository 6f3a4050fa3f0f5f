"""The lookups of accounts by e-mail and custom id read an index, never the whole table.

Every SYNERISE sign-in without a uuid looks up the uuid stored for its e-mail or custom id,
and the admin login checks whether an identifier names a linked account. Without an index
each of those reads every account: at 200,000 accounts a sign-in cost some 40 ms more on
PostgreSQL (``benchmarks/api_overhead.py --accounts 200000``). The plans are read with
sequential scans disabled, so a table of a few rows shows which index the planner can use.
"""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import NotSupportedError, connection, models
from django.db.migrations.state import ProjectState
from django.test.utils import CaptureQueriesContext

from django_synerise.backends import _linked_account_exists, local_users_for
from django_synerise.migration_operations import AddIndexConcurrently
from django_synerise.models import SyneriseAccount
from django_synerise.services.login import _stored_uuid
from tests.factories import make_account

pytestmark = pytest.mark.django_db

ACCOUNTS = SyneriseAccount._meta.db_table

LOOKUPS: dict[str, Callable[[], Any]] = {
    "uuid by e-mail": lambda: _stored_uuid(email="Ann@Example.com", custom_id=None),
    "uuid by custom id": lambda: _stored_uuid(email=None, custom_id="shop-7"),
    "linked account": lambda: _linked_account_exists("ann@example.com"),
}


def _plan(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize("name", list(LOOKUPS))
def test_account_lookups_read_an_index(name, require_postgres):
    make_account(email="ann@example.com", custom_id="shop-7",
                 uuid="6f1c3a52-8d2e-4f7a-9b1c-2d3e4f5a6b7c")
    make_account(email="bob@example.com", uuid="7a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d")
    with CaptureQueriesContext(connection) as queries:
        LOOKUPS[name]()
    (sql,) = [q["sql"] for q in queries.captured_queries]
    assert ACCOUNTS in sql
    plan = _plan(sql)
    assert f"Seq Scan on {ACCOUNTS}" not in plan, plan
    assert "synerise_account_" in plan, plan


def test_the_local_users_check_reads_indexes_only(require_postgres):
    """The check a password sign-in makes before sending a password to Synerise reads the
    accounts by their indexes and the users by the site's (one OR across the join read both
    whole tables: 190 ms a sign-in at 200,000 users, then 1.3 ms with the indexes below)."""
    user_model = get_user_model()
    meta = user_model._meta
    user_table = meta.db_table
    username = meta.get_field(user_model.USERNAME_FIELD).column
    email = meta.get_field(user_model.get_email_field_name()).column
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:  # what the scaling docs advise a large site to add
        cursor.execute(f"CREATE INDEX site_user_name_ci ON {quote(user_table)} "
                       f"(UPPER({quote(username)}))")
        cursor.execute(f"CREATE INDEX site_user_email_ci ON {quote(user_table)} "
                       f"(UPPER({quote(email)}))")
    ann = make_account(email="ann@example.com", custom_id="shop-7")
    make_account(email="bob@example.com")
    with CaptureQueriesContext(connection) as queries:
        found = local_users_for("ANN@example.com")
    assert [user.pk for user in found] == [ann.user_id]
    (sql,) = [q["sql"] for q in queries.captured_queries]
    plan = _plan(sql)
    for index in ("site_user_name_ci", "site_user_email_ci", "synerise_account_email_ci_idx",
                  "synerise_account_custom_id_idx"):
        assert index in plan, plan
    assert "Seq Scan" not in plan, plan


def test_the_indexes_are_in_the_database():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, ACCOUNTS)
    assert constraints["synerise_account_custom_id_idx"]["columns"] == ["custom_id"]
    assert constraints["synerise_account_email_ci_idx"]["index"]


def _index_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, ACCOUNTS))


def test_the_migration_builds_the_indexes_without_blocking_writes(require_postgres):
    out = StringIO()
    call_command("sqlmigrate", "django_synerise", "0007", stdout=out)
    sql = out.getvalue()
    assert 'CREATE INDEX CONCURRENTLY "synerise_account_email_ci_idx"' in sql, sql
    assert 'CREATE INDEX CONCURRENTLY "synerise_account_custom_id_idx"' in sql, sql
    assert "BEGIN" not in sql, sql  # atomic = False: PostgreSQL refuses it in a transaction

    out = StringIO()
    call_command("sqlmigrate", "django_synerise", "0007", "--backwards", stdout=out)
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "synerise_account_email_ci_idx"' in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_migration_runs_backwards_and_forwards(require_postgres):
    names = {"synerise_account_email_ci_idx", "synerise_account_custom_id_idx"}
    try:
        call_command("migrate", "django_synerise", "0006", verbosity=0)
        assert not names & _index_names()
    finally:
        call_command("migrate", "django_synerise", verbosity=0)
    assert names <= _index_names()


def test_a_concurrent_build_inside_a_transaction_is_refused(require_postgres):
    operation = AddIndexConcurrently(
        model_name="syneriseaccount", index=models.Index(fields=["uuid"], name="never_built")
    )
    state = ProjectState.from_apps(apps)
    with (
        pytest.raises(NotSupportedError, match="atomic = False"),
        connection.schema_editor(atomic=True) as editor,
    ):
        operation.database_forwards("django_synerise", editor, state, state)
    assert "never_built" not in _index_names()
