"""``django_synerise.compiled``: statements compiled once per database give what the ORM gives."""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.db.models import F
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_synerise.compiled import CompiledQuery, CompiledSQL, Slot, Values, update_sql
from django_synerise.models import ClientToken, SyneriseAccount
from django_synerise.services import activity, tokens
from tests.factories import make_account, make_token, make_user

pytestmark = pytest.mark.django_db

# The package re-exports the function ``login``; the module is read from the import system.
login_service = importlib.import_module("django_synerise.services.login")
refresh = importlib.import_module("django_synerise.services.refresh")

CLIENT_ID = SyneriseAccount._meta.get_field("client_id")
EMAIL = SyneriseAccount._meta.get_field("email")


class _Counting:
    """A statement builder that counts its calls."""

    def __init__(self, build: Any) -> None:
        self.build, self.calls = build, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.build(*args)


def _fields(obj: Any) -> dict[str, Any]:
    return {"pk": obj.pk, **model_to_dict(obj)}


def test_account_lookup_gives_the_orms_account_and_user_in_one_query() -> None:
    account = make_account(email="Mixed@Example.com", uuid="8f8c0b7e-3d1a-4a59-9d7e-1f0c2b3a4d5e")
    make_account()
    expected = SyneriseAccount.objects.select_related("user").get(pk=account.pk)

    with CaptureQueriesContext(connection) as queries:
        found = login_service._find_account(account.client_id)
        assert found is not None
        username = found.user.get_username()

    assert len(queries) == 1
    assert _fields(found) == _fields(expected)
    assert _fields(found.user) == _fields(expected.user)
    assert username == expected.user.get_username()
    assert found._state.db == "default" and not found._state.adding
    assert login_service._find_account("no-such-client") is None


def test_active_account_lookup_loads_the_token_row_or_caches_its_absence() -> None:
    with_token = make_account()
    row = make_token(with_token)
    without = make_account()
    inactive = make_account(make_user(is_active=False))

    with CaptureQueriesContext(connection) as queries:
        found = activity.account_for_client_id(with_token.client_id)
        assert found is not None
        token = found.token
        lonely = activity.account_for_client_id(without.client_id)
        assert lonely is not None
        with pytest.raises(ClientToken.DoesNotExist):
            lonely.token  # noqa: B018 - the reverse one-to-one, cached as absent
    assert len(queries) == 2  # one per lookup; the related rows came with them

    assert token.pk == row.pk and token.account is found
    assert token.get_token() == row.plaintext
    assert _fields(token) == _fields(ClientToken.objects.get(pk=row.pk))
    assert activity.account_for_client_id(inactive.client_id) is None
    assert activity.account_for_client_id("no-such-client") is None


def test_stored_uuid_matches_the_email_case_insensitively_and_literally() -> None:
    old = timezone.now() - timedelta(days=1)
    make_account(
        email="a_b%c@example.com", uuid="11111111-1111-4111-8111-111111111111", last_login_at=old
    )
    make_account(
        email="A_B%C@EXAMPLE.COM",
        uuid="22222222-2222-4222-8222-222222222222",
        last_login_at=timezone.now(),
    )
    make_account(
        email="axb%c@example.com",
        uuid="33333333-3333-4333-8333-333333333333",
        last_login_at=timezone.now() + timedelta(minutes=1),
    )

    # The most recent sign-in of that e-mail, whatever its case; "_" is not a wildcard.
    assert (
        login_service._stored_uuid(email=" a_b%C@example.com ", custom_id=None)
        == "22222222-2222-4222-8222-222222222222"
    )
    assert login_service._stored_uuid(email="nobody@example.com", custom_id=None) is None
    make_account(custom_id="shop-7", uuid="44444444-4444-4444-8444-444444444444")
    assert (
        login_service._stored_uuid(email=None, custom_id="shop-7")
        == "44444444-4444-4444-8444-444444444444"
    )


def test_a_statement_is_compiled_once_per_database_then_run_with_new_values() -> None:
    build = _Counting(
        lambda v: SyneriseAccount.objects.filter(client_id=v["client_id"]).order_by("pk")
    )
    query = CompiledQuery(SyneriseAccount, build, {"client_id": CLIENT_ID})
    first, second = make_account(), make_account()

    assert [a.pk for a in query.instances(client_id=first.client_id)] == [first.pk]
    compiled = build.calls
    assert compiled == 2  # once with slots, once with sample values to compare the SQL
    assert [a.pk for a in query.instances(client_id=second.client_id)] == [second.pk]
    assert query.first(client_id="no-such-client") is None
    assert build.calls == compiled


def test_a_statement_whose_sql_depends_on_its_values_runs_through_the_orm() -> None:
    # A "contains" lookup writes a LIKE pattern for a value, but concatenates an expression:
    # its slot could not stand for the value, so every call builds the ORM's own query.
    build = _Counting(lambda v: SyneriseAccount.objects.filter(email__contains=v["part"]))
    query = CompiledQuery(SyneriseAccount, build, {"part": EMAIL})
    literal = make_account(email="a%b@example.com")
    make_account(email="axxb@example.com")

    assert [a.pk for a in query.instances(part="a%b")] == [literal.pk]
    calls = build.calls
    assert [a.pk for a in query.instances(part="a%b")] == [literal.pk]
    assert build.calls == calls + 1


def test_column_reads_a_flat_values_list() -> None:
    make_account(client_id="col-1")
    query = CompiledQuery(
        SyneriseAccount,
        lambda v: SyneriseAccount.objects.filter(client_id=v["id"]).values_list(
            "client_id", flat=True
        ),
        {"id": CLIENT_ID},
    )
    assert query.column(id="col-1") == ["col-1"]
    assert query.column(id="col-2") == []


def test_compiled_update_prepares_each_value_as_its_field_does() -> None:
    account = make_account()
    row = make_token(account)
    when = timezone.now().replace(microsecond=0) + timedelta(minutes=3)

    def build(db: str, v: Values) -> tuple[str, list[Any]]:
        queryset = ClientToken.objects.using(db).filter(pk=v["pk"])
        sql, params = update_sql(
            queryset,
            {
                "retry_at": v["when"],
                "last_error": v["error"],
                "failure_count": F("failure_count") + 1,
            },
        )
        return sql, list(params)

    counting = _Counting(build)
    field = ClientToken._meta.get_field
    statement = CompiledSQL(
        counting,
        {
            "pk": (ClientToken._meta.pk, False),
            "when": (field("retry_at"), True),
            "error": (field("last_error"), True),
        },
    )
    for error in ("first", "second"):
        sql, params = statement.sql("default", pk=row.pk, when=when, error=error)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            assert cursor.rowcount == 1
    assert counting.calls == 2  # compiled once: slots, then samples

    row.refresh_from_db()
    assert (row.retry_at, row.last_error, row.failure_count) == (when, "second", 2)


class _CountingSlot(Slot):
    """A slot that counts how often its value is prepared (copies share the count)."""

    prepared: list[Any]

    def prepare(self, value: Any, connection: Any) -> Any:
        self.prepared.append(value)
        return super().prepare(value, connection)


def test_a_slot_used_twice_is_prepared_once_per_run() -> None:
    account = make_account()
    rows = [make_token(account, failure_count=2), make_token(make_account(), failure_count=5)]
    ClientToken.objects.filter(pk=rows[0].pk).update(version=7)
    slot = _CountingSlot("n", ClientToken._meta.get_field("failure_count"))
    slot.prepared = []

    def build(db: str, v: Values) -> tuple[str, list[Any]]:
        queryset = ClientToken.objects.using(db).filter(failure_count__lte=v["n"])
        sql, params = update_sql(queryset.exclude(version=v["n"]), {"last_error": "seen"})
        return sql, list(params)

    statement = CompiledSQL(build, {"n": slot})
    assert statement.is_compiled("default")
    slot.prepared.clear()
    sql, params = statement.sql("default", n=7)
    assert slot.prepared == [7] and params.count(7) == 2
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    errors = dict(ClientToken.objects.values_list("pk", "last_error"))
    assert errors == {rows[0].pk: "", rows[1].pk: "seen"}


def test_a_slot_takes_values_not_expressions() -> None:
    with pytest.raises(TypeError):
        Slot("when", ClientToken._meta.get_field("retry_at")).prepare(F("retry_at"), connection)


def test_the_request_paths_statements_compile_here() -> None:
    """The lookups and the login's write are compiled (not run through the ORM every time)
    on PostgreSQL; on SQLite the e-mail lookup is not (SQLite escapes an iexact value)."""
    statements: dict[str, Any] = {
        "account": login_service._ACCOUNT_BY_CLIENT_ID,
        "active account": activity._ACTIVE_ACCOUNT_BY_CLIENT_ID,
        "uuid by custom id": login_service._UUIDS_BY_CUSTOM_ID,
        "uuid by email": login_service._UUIDS_BY_EMAIL,
        "login write": tokens._store_statement(SyneriseAccount, tuple(login_service._LOGIN_FIELDS)),
        "refresh write": refresh._SUCCESSES_UPDATE,
        "single claim": refresh._CLAIMABLE_ROW_KEYS,
    }
    compiled = {name for name, st in statements.items() if st.is_compiled("default")}
    if connection.vendor == "postgresql":
        assert compiled == set(statements)
    else:  # the refresh write's arrays are PostgreSQL's; SQLite escapes an iexact value
        assert compiled == set(statements) - {"uuid by email", "refresh write"}


def test_a_database_error_while_compiling_is_raised_and_not_remembered() -> None:
    account = make_account()
    failures = [DatabaseError("server version unknown")]

    def build(v: Values) -> Any:
        if failures:
            raise failures.pop()
        return SyneriseAccount.objects.filter(client_id=v["client_id"])

    counting = _Counting(build)
    query = CompiledQuery(SyneriseAccount, counting, {"client_id": CLIENT_ID})
    with pytest.raises(DatabaseError):
        query.first(client_id=account.client_id)
    found = query.first(client_id=account.client_id)
    assert found is not None and found.pk == account.pk
    calls = counting.calls
    query.first(client_id=account.client_id)
    assert counting.calls == calls  # compiled on the second try, and kept


def _timestamptz_loader(cursor: Any) -> type:
    from psycopg.adapt import PyFormat

    oid = cursor.cursor.adapters.types["timestamptz"].oid
    return cursor.cursor.adapters.get_loader(oid, PyFormat.as_pq(PyFormat.TEXT))


@pytest.mark.postgres
def test_native_timestamps_load_what_djangos_loader_loads(require_postgres: None) -> None:
    from psycopg.types.datetime import TimestamptzLoader

    from django_synerise.compiled import native_timestamps

    row = make_token(make_account())
    expected = ClientToken.objects.values_list("expires_at", "refresh_at").get(pk=row.pk)
    sql = 'SELECT "expires_at", "refresh_at" FROM "django_synerise_clienttoken" WHERE id = %s'
    with connection.cursor() as cursor:
        djangos = _timestamptz_loader(cursor)
        native_timestamps(cursor)
        native = _timestamptz_loader(cursor)
        cursor.execute(sql, [row.pk])
        loaded = cursor.fetchone()
    assert native is not djangos and native.__name__ == TimestamptzLoader.__name__
    assert loaded == expected
    assert all(value.tzinfo is connection.timezone for value in loaded)
    with connection.cursor() as cursor:  # a new cursor: Django's loader again
        assert _timestamptz_loader(cursor) is djangos


@pytest.mark.postgres
def test_native_timestamps_keep_djangos_loader_in_another_session_zone(
    require_postgres: None,
) -> None:
    from django_synerise.compiled import native_timestamps

    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Europe/Warsaw'")
    try:
        with connection.cursor() as cursor:
            djangos = _timestamptz_loader(cursor)
            native_timestamps(cursor)
            assert _timestamptz_loader(cursor) is djangos
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
