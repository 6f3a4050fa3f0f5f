"""Overhead of the django-synerise HTTP API over calling SyneriseClient directly.

Login and refresh go through the whole Django stack (middleware, DRF, serializers, throttles,
token verification, encryption, database writes, session) with Django's test client, and the
same Synerise calls are made with :class:`django_synerise.client.SyneriseClient` directly —
both against one FakeSynerise at zero latency, interleaved in one run. Prints the median and
p95 of each path, the overhead per request, and the SQL statements per request.

Run from the repository root::

    .venv/bin/python benchmarks/api_overhead.py [--requests 300]

Uses ``tests.settings`` (in-memory SQLite) unless ``DJANGO_SETTINGS_MODULE`` is set;
``DATABASE_URL`` selects PostgreSQL as in the test suite (in a scratch test database, with
persistent connections).
"""

from __future__ import annotations

import argparse
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

from django.conf import settings  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from django_synerise import throttle  # noqa: E402
from django_synerise.client import SyneriseClient  # noqa: E402
from django_synerise.models import ClientToken  # noqa: E402
from django_synerise.testing import FakeSynerise  # noqa: E402
from django_synerise.verification import clear_public_key_cache  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench-password"
_TX = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _statements(captured: list[dict[str, Any]]) -> tuple[int, int]:
    """Return (SQL statements without transaction control, database round trips)."""
    sql = sum(1 for q in captured if not q["sql"].lstrip().upper().startswith(_TX))
    return sql, len(captured)


def _timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = func()
    return (time.perf_counter() - started) * 1000.0, result


def _age_stored_token() -> None:
    """Make the stored token look obtained 5 minutes ago, so refresh calls Synerise."""
    past = timezone.now() - timedelta(minutes=5)
    ClientToken.objects.update(issued_at=past, refreshed_at=past)


def run(requests: int) -> dict[str, Any]:
    """Measure ``requests`` logins and refreshes each way; return the figures.

    Runs in a scratch test database (created, then dropped: never the ``DATABASE_URL``
    database itself) with persistent connections, as a production site has them
    (``CONN_MAX_AGE``), so a request does not pay for opening a database connection.
    """
    setup_test_environment()
    connection.settings_dict["CONN_MAX_AGE"] = None
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        return _measure(requests)
    finally:
        connection.creation.destroy_test_db(test_name, verbosity=0)


def _measure(requests: int) -> dict[str, Any]:
    with FakeSynerise(presign=True, record_requests=False) as fake:
        settings.SYNERISE = {
            **settings.SYNERISE,
            "BASE_URL": fake.url,
            "API_KEY": fake.api_key,
            "LOGIN_THROTTLE_RATES": dict.fromkeys(throttle.SCOPES),
        }
        clear_public_key_cache()
        fake.add_client(email=EMAIL, password=PASSWORD)
        direct = SyneriseClient()
        api = APIClient()
        body = {"email": EMAIL, "password": PASSWORD}

        # Warm up both paths (first login creates the user, key fetch, connection pools).
        for _ in range(20):
            api.post("/synerise/auth/login/", body, format="json")
            direct.login(email=EMAIL, password=PASSWORD)

        def logins(
            client: APIClient,
        ) -> tuple[list[float], list[float], list[tuple[int, int]], str]:
            stack: list[float] = []
            base: list[float] = []
            queries: list[tuple[int, int]] = []
            token = ""
            for _ in range(requests):
                reset_queries()
                with CaptureQueriesContext(connection) as ctx:
                    ms, response = _timed(
                        lambda: client.post("/synerise/auth/login/", body, format="json"))
                assert response.status_code == 200, response.content
                token = response.json()["token"]
                stack.append(ms)
                queries.append(_statements(ctx.captured_queries))
                ms, _ = _timed(lambda: direct.login(email=EMAIL, password=PASSWORD))
                base.append(ms)
            return stack, base, queries, token

        login_stack, login_direct, login_queries, token = logins(api)
        settings.SYNERISE = {**settings.SYNERISE, "LOGIN_STARTS_SESSION": False}
        plain_stack, plain_direct, plain_queries, token = logins(APIClient())

        bearer = APIClient()
        refresh_stack: list[float] = []
        refresh_direct: list[float] = []
        refresh_queries: list[tuple[int, int]] = []
        direct_token = direct.login(email=EMAIL, password=PASSWORD).token
        for _ in range(requests):
            _age_stored_token()
            reset_queries()
            bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            with CaptureQueriesContext(connection) as ctx:
                ms, response = _timed(lambda: bearer.post("/synerise/auth/refresh/"))
            assert response.status_code == 200, response.content
            token = response.json()["token"]
            refresh_stack.append(ms)
            refresh_queries.append(_statements(ctx.captured_queries))
            ms, result = _timed(lambda: direct.refresh(direct_token))  # noqa: B023
            direct_token = result.token
            refresh_direct.append(ms)

    def summary(
        stack: list[float], base: list[float], queries: list[tuple[int, int]]
    ) -> dict[str, float]:
        return {
            "stack_median": statistics.median(stack),
            "stack_p95": _percentile(stack, 0.95),
            "direct_median": statistics.median(base),
            "direct_p95": _percentile(base, 0.95),
            "overhead_median": statistics.median(stack) - statistics.median(base),
            "overhead_p95": _percentile(stack, 0.95) - _percentile(base, 0.95),
            "queries": statistics.mean(q for q, _ in queries),
            "queries_max": max(q for q, _ in queries),
            "round_trips": statistics.mean(t for _, t in queries),
        }

    return {
        "login": summary(login_stack, login_direct, login_queries),
        "login (no session)": summary(plain_stack, plain_direct, plain_queries),
        "refresh": summary(refresh_stack, refresh_direct, refresh_queries),
        "requests": requests,
        "database": connection.vendor,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Exit status 1 when the median overhead is over the target; the target is checked on
    SQLite (the cost of the Django stack and of django-synerise). On PostgreSQL each database
    round trip also goes to the server, so the figures are printed for reference only.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per path")
    parser.add_argument("--target-ms", type=float, default=5.0,
                        help="median overhead target per request (checked on SQLite)")
    args = parser.parse_args(argv)
    figures = run(args.requests)
    print(f"django-synerise API overhead ({figures['requests']} requests per path, "
          f"{figures['database']}, FakeSynerise at zero latency)")
    print(f"{'':18} {'stack med':>10} {'stack p95':>10} {'direct med':>11} {'direct p95':>11} "
          f"{'overhead med':>13} {'overhead p95':>13} {'SQL/req':>13} {'round trips':>12}")
    ok = True
    for name in ("login", "login (no session)", "refresh"):
        f = figures[name]
        print(f"{name:18} {f['stack_median']:8.2f}ms {f['stack_p95']:8.2f}ms "
              f"{f['direct_median']:9.2f}ms {f['direct_p95']:9.2f}ms "
              f"{f['overhead_median']:11.2f}ms {f['overhead_p95']:11.2f}ms "
              f"{f['queries']:5.1f} (max {f['queries_max']}) {f['round_trips']:12.1f}")
        if name != "login (no session)":
            ok = ok and f["overhead_median"] <= args.target_ms
    if figures["database"] != "sqlite":
        print(f"target: checked on SQLite only ({figures['database']} adds a server round trip "
              "per statement and transaction command)")
        return 0
    print(f"target: median overhead <= {args.target_ms:g} ms per request -> "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
