"""``CaseByPk``: one value per listed row in one ``UPDATE`` (arrays on PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from django.db import connection
from django.db.models import F, IntegerField
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_synerise.expressions import CaseByPk, PkIn, _array_element, _array_literal
from django_synerise.models import ClientToken
from tests.fixtures_refresh import seed_token


@pytest.mark.django_db
def test_listed_rows_get_their_value_others_keep_theirs(fake_synerise: Any) -> None:
    a, b, c = (seed_token(fake_synerise) for _ in range(3))
    when = timezone.now().replace(microsecond=0) + timedelta(minutes=7)
    ClientToken.objects.filter(pk=b.pk).update(retry_at=when)
    kept = ClientToken.objects.get(pk=c.pk).retry_at
    field = ClientToken._meta.get_field("retry_at")

    with CaptureQueriesContext(connection) as queries:
        written = ClientToken.objects.filter(pk__in=[a.pk, b.pk, c.pk]).update(
            retry_at=CaseByPk({a.pk: when, b.pk: None}, default=F("retry_at"), output_field=field),
            failure_count=CaseByPk(
                {a.pk: 3, c.pk: 5}, default=F("failure_count"), output_field=IntegerField()
            ),
        )

    assert written == 3 and len(queries) == 1
    values = {
        row.pk: (row.retry_at, row.failure_count)
        for row in ClientToken.objects.filter(pk__in=[a.pk, b.pk, c.pk])
    }
    assert values == {a.pk: (when, 3), b.pk: (None, 0), c.pk: (kept, 5)}


@pytest.mark.django_db
def test_statement_text_does_not_grow_with_the_rows_on_postgresql(fake_synerise: Any) -> None:
    """On PostgreSQL the keys and values travel as two arrays, so the statement's text is the
    same for 2 rows and for 20; elsewhere it is ``CASE pk WHEN ... THEN ...``."""
    rows = [seed_token(fake_synerise) for _ in range(20)]
    texts = []
    for size in (2, 20):
        chosen = rows[:size]
        versions = CaseByPk(
            {row.pk: row.version for row in chosen}, default=None, output_field=IntegerField()
        )
        queryset = ClientToken.objects.filter(pk__in=[row.pk for row in chosen], version=versions)
        assert queryset.count() == size
        sql, _ = queryset.query.sql_with_params()
        texts.append(sql.split(" AND ", 1)[1])  # the CaseByPk part (pk__in grows)
    if connection.vendor == "postgresql":
        assert texts[0] == texts[1]
    else:
        assert texts[1].count("WHEN") == 20


@pytest.mark.django_db
def test_awkward_text_and_nulls_round_trip(fake_synerise: Any) -> None:
    """Values travel inside one array text on PostgreSQL: quotes, backslashes, commas, braces,
    the word NULL and non-ASCII text come back exactly; ``None`` is NULL."""
    rows = [seed_token(fake_synerise) for _ in range(6)]
    texts = ['a "quoted" word', "back\\slash \\\\ and \\\"", "commas, {braces} and }{", "NULL",
             "zażółć gęślą jaźń 🙂", "plain"]
    field = ClientToken._meta.get_field("last_error")
    ClientToken.objects.filter(pk__in=[r.pk for r in rows]).update(
        last_error=CaseByPk(
            {row.pk: text for row, text in zip(rows, texts, strict=True)},
            default=F("last_error"),
            output_field=field,
        ),
        previous_valid_until=CaseByPk(
            {rows[0].pk: None, rows[1].pk: timezone.now()},
            default=F("previous_valid_until"),
            output_field=ClientToken._meta.get_field("previous_valid_until"),
        ),
    )
    stored = dict(ClientToken.objects.filter(pk__in=[r.pk for r in rows]).values_list(
        "pk", "last_error"))
    assert [stored[row.pk] for row in rows] == texts
    first, second = (ClientToken.objects.get(pk=r.pk) for r in rows[:2])
    assert first.previous_valid_until is None and second.previous_valid_until is not None


@pytest.mark.django_db
def test_pk_in_selects_the_listed_rows_and_no_keys_select_none(fake_synerise: Any) -> None:
    a, b, c = (seed_token(fake_synerise) for _ in range(3))

    assert set(ClientToken.objects.filter(PkIn([a.pk, c.pk])).values_list("pk", flat=True)) == {
        a.pk,
        c.pk,
    }
    with CaptureQueriesContext(connection) as queries:
        assert ClientToken.objects.filter(PkIn([])).update(failure_count=9) == 0
    assert len(queries) == 0
    assert ClientToken.objects.get(pk=b.pk).failure_count == 0


@pytest.mark.django_db
def test_case_by_pk_arrays_of_two_lists_is_the_mapping(fake_synerise: Any) -> None:
    a, b = seed_token(fake_synerise), seed_token(fake_synerise)
    field = ClientToken._meta.get_field("failure_count")

    ClientToken.objects.filter(pk__in=[a.pk, b.pk]).update(
        failure_count=CaseByPk.arrays_of([b.pk, a.pk], [7, 4], default=F("failure_count"),
                                         output_field=field)
    )

    counts = dict(ClientToken.objects.filter(pk__in=[a.pk, b.pk]).values_list("pk",
                                                                              "failure_count"))
    assert counts == {a.pk: 4, b.pk: 7}
    with pytest.raises(ValueError):
        CaseByPk.arrays_of([a.pk], [1, 2], default=None, output_field=field)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [1, -2, 10**15, 0],
        ["plain", "", 'a "quote"', "back\\slash", "NULL", "{braces},"],
        ["only plain words", "and more"],
        [datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=dt_timezone.utc),
         datetime(2026, 12, 3, 11, 0, tzinfo=dt_timezone(timedelta(hours=5, minutes=30)))],
        [1, None, 3],
        ["a", None],
        [True, False],
    ],
)
def test_array_text_of_one_type_is_the_element_by_element_text(values: list[Any]) -> None:
    """The one-pass forms for a list of ints, strings or times write what the general form
    (element by element) writes."""
    general = "{" + ",".join(_array_element(value) for value in values) + "}"
    assert _array_literal(values) == general


@pytest.mark.django_db
def test_a_column_of_times_round_trips_exactly(fake_synerise: Any) -> None:
    rows = [seed_token(fake_synerise) for _ in range(3)]
    times = [
        datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=dt_timezone.utc),
        datetime(2026, 12, 3, 11, 0, 0, 1, tzinfo=dt_timezone(timedelta(hours=5, minutes=30))),
        datetime(2027, 1, 1, tzinfo=dt_timezone(timedelta(hours=-8))),
    ]
    ClientToken.objects.filter(pk__in=[r.pk for r in rows]).update(
        refresh_at=CaseByPk.arrays_of(
            [r.pk for r in rows], times, default=F("refresh_at"),
            output_field=ClientToken._meta.get_field("refresh_at"),
        )
    )
    stored = dict(ClientToken.objects.filter(pk__in=[r.pk for r in rows]).values_list(
        "pk", "refresh_at"))
    assert [stored[row.pk] for row in rows] == times
