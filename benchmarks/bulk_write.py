"""The refresh engine's bulk compare-and-swap writes: raw SQL against the ORM, on PostgreSQL.

Usage (PostgreSQL server required; a scratch database ``<name>_bulk_write_bench`` is created
and dropped)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        python benchmarks/bulk_write.py [--sizes 100 1000] [--repeat 15]

A batch's two writes are measured, each at every ``--sizes`` rows per batch, in one process:

* **successes**: every row gets a new token (eight per-row columns, the version checked per
  row), what a flush of ``refresh_batch`` writes;
* **failures**: rows end ``transient`` (retry time, failure counted) or ``needs_login``, what
  the final write of a batch stores.

Each write is made three ways over the same rows:

* ``sql``: one ``UPDATE ... SET col = CASE id WHEN %s THEN %s ... END`` built as a string
  from quoted names (the engine's write until this benchmark);
* ``orm_update``: one ``QuerySet.update()`` with ``Case``/``When`` expressions, filtered on
  the lease, status and per-row version;
* ``bulk_update``: ``QuerySet.bulk_update()`` on a queryset filtered on the lease and status
  (it cannot check a per-row version, so it is not a compare-and-swap: measured for scale).

Before every repetition the rows are claimed again (status ``refreshing``, a new lease) and
reloaded, outside the clock. The variants take turns within each repetition so that load on
the machine spreads over all of them. Printed per write, size and variant: the median wall
milliseconds per batch (with the spread of the middle half), the median CPU milliseconds of
this process per row (building the statement, the driver, the round trip's client side) and
the queries per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_SUFFIX = "_bulk_write_bench"


def configure_django() -> None:
    """This benchmark's settings (see ``bench_django.configure_django``)."""
    from bench_django import configure_django as configure

    configure(None, None, test_suffix=BENCH_SUFFIX)


# --------------------------------------------------------------------------- fixtures


def seed(n: int) -> list[int]:
    """Create ``n`` users, accounts and active tokens; return the token ids."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from django_synerise.models import ClientToken, SyneriseAccount

    user_model = get_user_model()
    now = timezone.now()
    users = user_model.objects.bulk_create(
        [user_model(username=f"bulk{i}", password="!unusable") for i in range(n)]  # noqa: S106
    )
    accounts = SyneriseAccount.objects.bulk_create(
        [SyneriseAccount(user=user, client_id=f"client-{i}") for i, user in enumerate(users)]
    )
    tokens = ClientToken.objects.bulk_create(
        [
            ClientToken(
                account=account,
                encrypted_token="gAAAAA" + f"{i:08d}" * 40,
                fingerprint=f"{i:064x}",
                expires_at=now + timedelta(minutes=59),
                refresh_at=now - timedelta(seconds=1),
                issued_at=now,
                last_used_at=now,
            )
            for i, account in enumerate(accounts)
        ]
    )
    return [token.pk for token in tokens]


def claim(ids: list[int]) -> tuple[list[Any], datetime]:
    """Mark ``ids`` refreshing under a fresh lease and load them (as a claim does)."""
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus

    lease_until = timezone.now() + timedelta(seconds=300)
    ClientToken.objects.filter(pk__in=ids).update(
        status=TokenStatus.REFRESHING, lease_until=lease_until, retry_at=None
    )
    rows = list(ClientToken.objects.select_related("account").filter(pk__in=ids).order_by("pk"))
    return rows, lease_until


def successes(rows: list[Any], round_: int) -> list[Any]:
    """A new token for every row (values differ per row and per repetition)."""
    from django.utils import timezone

    from django_synerise.services.refresh import _CallResult
    from django_synerise.services.tokens import PreparedToken

    now = timezone.now()
    return [
        _CallResult(
            row,
            prepared=PreparedToken(
                ciphertext="gAAAAB" + f"{row.pk:08d}{round_:08d}" * 20,
                fingerprint=f"{row.pk:032x}{round_:032x}",
                expires_at=now + timedelta(minutes=60, seconds=row.pk % 60),
                refresh_at=now + timedelta(minutes=45, seconds=row.pk % 60),
                issued_at=now,
                origin="refresh",
                claims=None,  # type: ignore[arg-type] - not read by the write
            ),
        )
        for row in rows
    ]


def failures(rows: list[Any]) -> list[Any]:
    """Every third row needs a login, the others retry later (different delays)."""
    from django_synerise.exceptions import SyneriseUnavailable
    from django_synerise.services.outcomes import RefreshOutcome
    from django_synerise.services.refresh import _CallResult, _Decision

    decisions = []
    for i, row in enumerate(rows):
        result = _CallResult(row, error=SyneriseUnavailable(status=503))
        if i % 3 == 0:
            decisions.append(
                _Decision(result, RefreshOutcome.NEEDS_LOGIN, "expired", reason="expired")
            )
        else:
            decisions.append(
                _Decision(
                    result, RefreshOutcome.TRANSIENT, "upstream_unavailable", retry_delay=5.0 + i
                )
            )
    return decisions


# --------------------------------------------------------------------------- variants


def _sql_successes(ok: list[Any], lease_until: datetime) -> int:
    """The engine's success write before this benchmark: SQL built from quoted names."""
    from django.db import connections, router
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus
    from django_synerise.services.refresh import _TOKEN_COLUMNS
    from django_synerise.services.tokens import supersede_values

    connection = connections[router.db_for_write(ClientToken)]
    meta = ClientToken._meta
    quote = connection.ops.quote_name

    def col(name: str) -> str:
        return quote((meta.pk if name == "id" else meta.get_field(name)).column)

    def value(name: str, value: Any) -> Any:
        return meta.get_field(name).get_db_prep_save(value, connection)

    def case(name: str, pairs: list[tuple[int, Any]], default: str, params: list[Any]) -> str:
        parts = []
        for pk, item in pairs:
            parts.append("WHEN %s THEN %s")
            params.extend([pk, value(name, item) if name else item])
        return f"CASE {col('id')} {' '.join(parts)} ELSE {default} END"

    now = timezone.now()
    params: list[Any] = []
    values = {o.row.pk: supersede_values(o.row, now) | o.prepared.row_values() for o in ok}
    sets = []
    for name in _TOKEN_COLUMNS:
        pairs = [(pk, row_values[name]) for pk, row_values in values.items()]
        sets.append(f"{col(name)} = {case(name, pairs, col(name), params)}")
    sets += [f"{col('refreshed_at')} = %s", f"{col('updated_at')} = %s", f"{col('status')} = %s"]
    params += [value("refreshed_at", now), value("updated_at", now), TokenStatus.ACTIVE.value]
    version = col("version")
    sets += [
        f"{version} = {version} + 1",
        f"{col('lease_until')} = NULL",
        f"{col('retry_at')} = NULL",
        f"{col('failure_count')} = 0",
        f"{col('last_error')} = ''",
    ]
    pks = [o.row.pk for o in ok]
    where_params: list[Any] = list(pks)
    versions = case("", [(o.row.pk, o.row.version) for o in ok], "NULL", where_params)
    where_params += [TokenStatus.REFRESHING.value, value("lease_until", lease_until)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} "  # noqa: S608
            f"WHERE {col('id')} IN ({', '.join(['%s'] * len(pks))}) AND {version} = {versions} "
            f"AND {col('status')} = %s AND {col('lease_until')} = %s",
            params + where_params,
        )
        return cursor.rowcount


def _sql_failures(decisions: list[Any], lease_until: datetime) -> int:
    """The engine's failure write before this benchmark: SQL built from quoted names."""
    from django.db import connections, router
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus

    connection = connections[router.db_for_write(ClientToken)]
    meta = ClientToken._meta
    quote = connection.ops.quote_name

    def col(name: str) -> str:
        return quote((meta.pk if name == "id" else meta.get_field(name)).column)

    def case(name: str, pairs: list[tuple[int, Any]], default: str, params: list[Any]) -> str:
        parts = []
        for pk, item in pairs:
            parts.append("WHEN %s THEN %s")
            params += [
                pk,
                meta.get_field(name).get_db_prep_save(item, connection) if name else item,
            ]
        return f"CASE {col('id')} {' '.join(parts)} ELSE {default} END"

    now = timezone.now()
    statuses, retries, errors, counted = [], [], [], []
    for decision in decisions:
        pk = decision.row.pk
        statuses.append((pk, decision.outcome.status.value))
        if decision.retry_at(now) is not None:
            retries.append((pk, decision.retry_at(now)))
        if decision.outcome.counts_failure:
            errors.append((pk, decision.code[:64]))
            counted.append((pk, 1))
    params: list[Any] = []
    status, lease, retry, error, failures_ = (
        col(name) for name in ("status", "lease_until", "retry_at", "last_error", "failure_count")
    )
    sets = [f"{status} = {case('status', statuses, status, params)}", f"{lease} = NULL"]
    sets.append(
        f"{retry} = {case('retry_at', retries, 'NULL', params)}" if retries else f"{retry} = NULL"
    )
    if errors:
        sets.append(f"{error} = {case('last_error', errors, error, params)}")
        sets.append(f"{failures_} = {failures_} + {case('', counted, '0', params)}")
    sets.append(f"{col('updated_at')} = %s")
    params.append(meta.get_field("updated_at").get_db_prep_save(now, connection))
    pks = [decision.row.pk for decision in decisions]
    params += pks
    params += [
        TokenStatus.REFRESHING.value,
        meta.get_field("lease_until").get_db_prep_save(lease_until, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {', '.join(sets)} "  # noqa: S608
            f"WHERE {col('id')} IN ({', '.join(['%s'] * len(pks))}) "
            f"AND {status} = %s AND {lease} = %s",
            params,
        )
        return cursor.rowcount


def _orm_successes(ok: list[Any], lease_until: datetime) -> int:
    """One ``update()`` with ``Case``/``When`` per column, version checked per row."""
    from django.db.models import Case, F, IntegerField, Value, When
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus
    from django_synerise.services.refresh import _TOKEN_COLUMNS, _refreshed_fields
    from django_synerise.services.tokens import supersede_values

    now = timezone.now()
    meta = ClientToken._meta
    values = {o.row.pk: supersede_values(o.row, now) | o.prepared.row_values() for o in ok}

    def per_row(name: str) -> Case:
        field = meta.get_field(name)
        whens = [When(pk=pk, then=Value(v[name], output_field=field)) for pk, v in values.items()]
        return Case(*whens, default=F(name), output_field=field)

    versions = Case(
        *(When(pk=o.row.pk, then=Value(o.row.version)) for o in ok), output_field=IntegerField()
    )
    return ClientToken.objects.filter(
        pk__in=list(values),
        version=versions,
        status=TokenStatus.REFRESHING,
        lease_until=lease_until,
    ).update(
        **{name: per_row(name) for name in _TOKEN_COLUMNS},
        **_refreshed_fields(now),
    )


def _orm_failures(decisions: list[Any], lease_until: datetime) -> int:
    """One ``update()`` with ``Case``/``When`` per column."""
    from django.db.models import Case, CharField, DateTimeField, F, Value, When
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus

    now = timezone.now()
    counted = [d for d in decisions if d.outcome.counts_failure]
    retries = [(d.row.pk, d.retry_at(now)) for d in decisions if d.retry_at(now) is not None]
    return ClientToken.objects.filter(
        pk__in=[d.row.pk for d in decisions],
        status=TokenStatus.REFRESHING,
        lease_until=lease_until,
    ).update(
        status=Case(
            *(When(pk=d.row.pk, then=Value(d.outcome.status.value)) for d in decisions),
            default=F("status"),
            output_field=CharField(),
        ),
        lease_until=None,
        retry_at=Case(
            *(When(pk=pk, then=Value(at)) for pk, at in retries),
            default=None,
            output_field=DateTimeField(),
        ),
        last_error=Case(
            *(When(pk=d.row.pk, then=Value(d.code[:64])) for d in counted),
            default=F("last_error"),
            output_field=CharField(),
        ),
        failure_count=F("failure_count")
        + Case(*(When(pk=d.row.pk, then=Value(1)) for d in counted), default=Value(0)),
        updated_at=now,
    )


def _bulk_update_successes(ok: list[Any], lease_until: datetime) -> int:
    """``bulk_update()``: the same columns, no per-row version check."""
    from django.db.models import F
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus
    from django_synerise.services.refresh import _TOKEN_COLUMNS, _refreshed_fields
    from django_synerise.services.tokens import supersede_values

    now = timezone.now()
    rows = []
    for o in ok:
        row = o.row
        for name, value in (supersede_values(row, now) | o.prepared.row_values()).items():
            setattr(row, name, value)
        row.refreshed_at = row.updated_at = now
        row.status = TokenStatus.ACTIVE
        row.version = F("version") + 1
        row.lease_until = row.retry_at = None
        row.failure_count, row.last_error = 0, ""
        rows.append(row)
    return ClientToken.objects.filter(
        status=TokenStatus.REFRESHING, lease_until=lease_until
    ).bulk_update(rows, [*_TOKEN_COLUMNS, *_refreshed_fields(now)])


def _bulk_update_failures(decisions: list[Any], lease_until: datetime) -> int:
    """``bulk_update()`` of the failure columns."""
    from django.db.models import F
    from django.utils import timezone

    from django_synerise.models import ClientToken, TokenStatus

    now = timezone.now()
    rows = []
    for d in decisions:
        row = d.row
        row.status, row.lease_until, row.retry_at = d.outcome.status, None, d.retry_at(now)
        if d.outcome.counts_failure:
            row.failure_count, row.last_error = F("failure_count") + 1, d.code[:64]
        row.updated_at = now
        rows.append(row)
    return ClientToken.objects.filter(
        status=TokenStatus.REFRESHING, lease_until=lease_until
    ).bulk_update(
        rows, ["status", "lease_until", "retry_at", "failure_count", "last_error", "updated_at"]
    )


def _engine_successes(ok: list[Any], lease_until: datetime) -> int:
    """The engine's success write (``CaseByPk`` in one ``update()``)."""
    from django_synerise.services.refresh import _store_successes

    return _store_successes(ok, lease_until)


def _engine_failures(decisions: list[Any], lease_until: datetime) -> int:
    """The engine's failure write (``CaseByPk`` in one ``update()``)."""
    from django_synerise.services.refresh import _store_failures

    return _store_failures(decisions, lease_until)


VARIANTS: dict[str, dict[str, Callable[[list[Any], datetime], int]]] = {
    "successes": {
        "sql": _sql_successes,
        "case_by_pk": _engine_successes,
        "orm_update": _orm_successes,
        "bulk_update": _bulk_update_successes,
    },
    "failures": {
        "sql": _sql_failures,
        "case_by_pk": _engine_failures,
        "orm_update": _orm_failures,
        "bulk_update": _bulk_update_failures,
    },
}


# --------------------------------------------------------------------------- measuring


def measure(
    write: Callable[[list[Any], datetime], int], items: list[Any], lease_until: datetime
) -> tuple[float, float, int]:
    """Run one write; return (wall ms, CPU ms of this process, queries)."""
    from django.db import connection

    queries = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        written = write(items, lease_until)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if written != len(items):
        raise AssertionError(f"{write.__name__} wrote {written} of {len(items)} rows")
    return wall * 1000, cpu * 1000, queries


def run(ids: list[int], sizes: list[int], repeat: int) -> None:
    """Measure every write, size and variant; print one line each."""
    for kind, variants in VARIANTS.items():
        for size in sizes:
            batch = ids[:size]
            samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
            for round_ in range(repeat + 1):  # the first round warms up and is not counted
                for name, write in variants.items():
                    rows, lease_until = claim(batch)
                    items = successes(rows, round_) if kind == "successes" else failures(rows)
                    sample = measure(write, items, lease_until)
                    if round_:
                        samples[name].append(sample)
            for name, values in samples.items():
                walls = sorted(v[0] for v in values)
                quartiles = statistics.quantiles(walls, n=4)
                cpu_per_row = statistics.median(v[1] for v in values) / size
                print(
                    f"{kind:9} {size:5} rows  {name:11}  median {statistics.median(walls):7.1f} "
                    f"ms/batch (IQR {quartiles[0]:.1f}-{quartiles[2]:.1f})  "
                    f"CPU {cpu_per_row:.3f} ms/row  queries {max(v[2] for v in values)}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 1000], help="rows per batch (100 1000)"
    )
    parser.add_argument("--repeat", type=int, default=15, help="repetitions per variant (15)")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if args.repeat < 2:
        parser.error("--repeat must be at least 2 (the spread needs two figures)")

    configure_django()
    from django.db import connection

    original_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False, keepdb=False)
    try:
        ids = seed(max(args.sizes))
        print(
            f"PostgreSQL {connection.pg_version}, {len(ids)} rows, "
            f"{args.repeat} repetitions per variant (after one warm-up)"
        )
        run(ids, sorted(args.sizes), args.repeat)
    finally:
        if not args.keep_db:
            connection.creation.destroy_test_db(original_name, verbosity=0)


if __name__ == "__main__":
    main()
