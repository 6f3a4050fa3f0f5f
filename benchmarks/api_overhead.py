"""Overhead of the django-synerise HTTP API over calling SyneriseClient directly.

Login and refresh go through the whole Django stack (middleware, DRF, serializers, throttles,
token verification, encryption, database writes, session) with Django's test client, and the
same Synerise calls are made with :class:`django_synerise.client.SyneriseClient` directly —
both against one FakeSynerise at zero latency, interleaved in one run. Prints the median and
p95 of each path, the overhead per request (wall time, and CPU time of this process, which
also runs the fake: both paths pay for its share alike), the SQL statements and the database
round trips per request (counted on every tenth request of a path, which is left out of the
timings: counting needs Django's debug cursor, which no production request runs). Exits 1
when the median overhead of login or refresh is over the target (5 ms), on whichever
database it ran.

Beside them, in the same run, a view that does only Django's part of a session login (read
the user, :func:`django.contrib.auth.login`, a JSON answer: no Synerise, no django-synerise
code) measures what any site pays for a session login, so the reader can see how much of the
login's overhead is Django's session machinery and how much is django-synerise.

``--accounts N`` stores N other users, each with a Synerise account, before measuring: the
size of a site's tables, where a lookup that reads a whole table (no index) shows.

``--prepared`` (PostgreSQL) connects with ``OPTIONS = {"server_side_binding": True,
"prepare_threshold": 5}``, the site's choice that lets the server reuse the plans of repeated
statements (docs/scaling.rst); Django's defaults (every statement parsed and planned anew)
otherwise.

Run from the repository root::

    .venv/bin/python benchmarks/api_overhead.py [--requests 300] [--accounts 200000] [--prepared]

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

from bench_django import machine_line, seed_accounts, site_logging  # noqa: E402

site_logging()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth import login as django_login  # noqa: E402
from django.db import connection, reset_queries  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test.utils import (  # noqa: E402
    CaptureQueriesContext,
    override_settings,
    setup_test_environment,
)
from django.urls import path  # noqa: E402
from django.utils import timezone  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from django_synerise import throttle  # noqa: E402
from django_synerise.client import SyneriseClient  # noqa: E402
from django_synerise.models import ClientToken, SyneriseAccount  # noqa: E402
from django_synerise.testing import FakeSynerise  # noqa: E402
from django_synerise.verification import clear_public_key_cache  # noqa: E402
from tests import urls as test_urls  # noqa: E402
from tests.settings import PREPARED_STATEMENTS  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "bench-password"
_TX = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@csrf_exempt
def django_login_only(request: HttpRequest) -> JsonResponse:
    """Django's part of a session login and nothing else: the baseline of the login path.

    Reads the user by primary key, as Django's session machinery does."""
    user = get_user_model()._default_manager.get(pk=_bench_user["pk"])
    django_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return JsonResponse({"user_id": user.pk})


#: The primary key of the signed-in user (known once the first login created it).
_bench_user: dict[str, Any] = {}

#: The test project's URLs and the baseline view (``ROOT_URLCONF`` while measuring).
urlpatterns = [path("bench/django-login/", django_login_only), *test_urls.urlpatterns]


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
    cpu = time.process_time()
    result = func()
    _cpu.append((time.process_time() - cpu) * 1000.0)
    return (time.perf_counter() - started) * 1000.0, result


#: CPU milliseconds of the last ``_timed`` calls (read right after each call).
_cpu: list[float] = []

#: Every ``COUNT_EVERY``-th request of a path counts its SQL statements and is left out of
#: the timings: counting needs Django's debug cursor, which formats every statement and keeps
#: a record of it, work that no production request does (``DEBUG`` is off there).
COUNT_EVERY = 10


def _counted(requests: int) -> int:
    """How many counted requests run beside ``requests`` timed ones."""
    return -(-requests // (COUNT_EVERY - 1))


def _age_stored_token() -> None:
    """Make the stored token look obtained 5 minutes ago, so refresh calls Synerise."""
    past = timezone.now() - timedelta(minutes=5)
    ClientToken.objects.update(issued_at=past, refreshed_at=past)


def run(requests: int, accounts: int = 0, *, prepared: bool = False) -> dict[str, Any]:
    """Measure ``requests`` logins and refreshes each way; return the figures.

    ``accounts`` other users with their Synerise accounts are stored first; ``prepared``
    connects with :data:`tests.settings.PREPARED_STATEMENTS` (PostgreSQL).

    Runs in a scratch test database (created, then dropped: never the ``DATABASE_URL``
    database itself) with persistent connections, as a production site has them
    (``CONN_MAX_AGE``), so a request does not pay for opening a database connection.
    """
    setup_test_environment()
    connection.settings_dict["CONN_MAX_AGE"] = None
    if prepared:
        connection.close()
        connection.settings_dict["OPTIONS"] = {
            **connection.settings_dict.get("OPTIONS", {}), **PREPARED_STATEMENTS}
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        seed_accounts(accounts)
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

        def logins(client: APIClient) -> tuple[_Samples, str]:
            samples = _Samples()
            token = ""
            for i in range(requests + _counted(requests)):
                response, timed = samples.request(
                    i, lambda: client.post("/synerise/auth/login/", body, format="json"))
                assert response.status_code == 200, response.content
                token = response.json()["token"]
                if not timed:
                    continue
                ms, _ = _timed(lambda: direct.login(email=EMAIL, password=PASSWORD))
                samples.direct.append(ms)
                samples.direct_cpu.append(_cpu[-1])
            return samples, token

        login, token = logins(api)

        _bench_user["pk"] = SyneriseAccount.objects.get(email=EMAIL).user_id
        baseline = _Samples()
        session = APIClient()
        with override_settings(ROOT_URLCONF=__name__):
            for _ in range(20):
                session.post("/bench/django-login/")
            for i in range(requests + _counted(requests)):
                response, _ = baseline.request(i, lambda: session.post("/bench/django-login/"))
                assert response.status_code == 200, response.content
        settings.SYNERISE = {**settings.SYNERISE, "LOGIN_STARTS_SESSION": False}
        plain, token = logins(APIClient())

        bearer = APIClient()
        refresh = _Samples()
        direct_token = direct.login(email=EMAIL, password=PASSWORD).token
        for i in range(requests + _counted(requests)):
            _age_stored_token()
            bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            response, timed = refresh.request(i, lambda: bearer.post("/synerise/auth/refresh/"))
            assert response.status_code == 200, response.content
            token = response.json()["token"]
            if not timed:
                continue
            ms, result = _timed(lambda: direct.refresh(direct_token))  # noqa: B023
            direct_token = result.token
            refresh.direct.append(ms)
            refresh.direct_cpu.append(_cpu[-1])

    return {
        "login": login.summary(),
        "django_login": baseline.baseline(),
        "login (no session)": plain.summary(),
        "refresh": refresh.summary(),
        "requests": requests,
        "accounts": SyneriseAccount.objects.count(),
        "database": connection.vendor,
        "options": ", ".join(f"{k}={v}" for k, v in connection.settings_dict["OPTIONS"].items()),
    }


class _Samples:
    """Per-request figures of one path: wall and CPU ms of both sides, statements."""

    def __init__(self) -> None:
        self.stack: list[float] = []
        self.direct: list[float] = []
        self.stack_cpu: list[float] = []
        self.direct_cpu: list[float] = []
        self.queries: list[tuple[int, int]] = []

    def request(self, index: int, send: Callable[[], Any]) -> tuple[Any, bool]:
        """Run ``send`` (the ``index``-th request of this path) and record it: its statements
        when it is a counted request, its wall and CPU time otherwise. Returns the response
        and whether it was timed."""
        if index % COUNT_EVERY == 0:
            reset_queries()
            with CaptureQueriesContext(connection) as ctx:
                response = send()
            self.queries.append(_statements(ctx.captured_queries))
            return response, False
        ms, response = _timed(send)
        self.stack.append(ms)
        self.stack_cpu.append(_cpu[-1])
        return response, True

    def baseline(self) -> dict[str, float]:
        """The figures of a path with no direct side (the Django session login)."""
        return {
            "stack_median": statistics.median(self.stack),
            "stack_p95": _percentile(self.stack, 0.95),
            "cpu_median": statistics.median(self.stack_cpu),
            "round_trips": statistics.mean(t for _, t in self.queries),
        }

    def summary(self) -> dict[str, float]:
        stack, base = self.stack, self.direct
        return {
            "stack_median": statistics.median(stack),
            "stack_p95": _percentile(stack, 0.95),
            "direct_median": statistics.median(base),
            "direct_p95": _percentile(base, 0.95),
            "overhead_median": statistics.median(stack) - statistics.median(base),
            "overhead_p95": _percentile(stack, 0.95) - _percentile(base, 0.95),
            "cpu_overhead_median": (
                statistics.median(self.stack_cpu) - statistics.median(self.direct_cpu)
            ),
            "queries": statistics.mean(q for q, _ in self.queries),
            "queries_max": max(q for q, _ in self.queries),
            "round_trips": statistics.mean(t for _, t in self.queries),
            "round_trips_max": max(t for _, t in self.queries),
        }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Exit status 1 when the median overhead of login or refresh is over the target, on SQLite
    (the cost of the Django stack and of django-synerise) as on PostgreSQL (where each
    database round trip also goes to the server: the figure a site sees).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per path")
    parser.add_argument("--accounts", type=int, default=0,
                        help="other users with Synerise accounts to store first (a site's table)")
    parser.add_argument("--prepared", action="store_true",
                        help="PostgreSQL: server-side parameters and prepared statements")
    parser.add_argument("--target-ms", type=float, default=5.0,
                        help="median overhead target per request (login and refresh)")
    args = parser.parse_args(argv)
    if args.prepared and connection.vendor != "postgresql":
        parser.error("--prepared needs PostgreSQL (set DATABASE_URL)")
    machine = machine_line(connection)
    figures = run(args.requests, args.accounts, prepared=args.prepared)
    print(f"django-synerise API overhead ({figures['requests']} requests per path, "
          f"{figures['database']}, {figures['accounts']:,} Synerise "
          f"account{'' if figures['accounts'] == 1 else 's'} stored, "
          f"FakeSynerise at zero latency)")
    print(machine)
    print(f"database options: {figures['options'] or 'Django defaults'}")
    print(f"{'':18} {'stack med':>10} {'stack p95':>10} {'direct med':>11} {'direct p95':>11} "
          f"{'overhead med':>13} {'overhead p95':>13} {'CPU ovh med':>12} {'SQL/req':>13} "
          f"{'trips/req':>10}")
    ok = True
    for name in ("login", "login (no session)", "refresh"):
        f = figures[name]
        print(f"{name:18} {f['stack_median']:8.2f}ms {f['stack_p95']:8.2f}ms "
              f"{f['direct_median']:9.2f}ms {f['direct_p95']:9.2f}ms "
              f"{f['overhead_median']:11.2f}ms {f['overhead_p95']:11.2f}ms "
              f"{f['cpu_overhead_median']:10.2f}ms "
              f"{f['queries']:5.1f} (max {f['queries_max']}) {f['round_trips']:10.1f}")
        if name != "login (no session)":
            ok = ok and f["overhead_median"] <= args.target_ms
    base = figures["django_login"]
    login = figures["login"]
    print(f"baseline: Django's own session login (no Synerise) {base['stack_median']:.2f} ms "
          f"median, p95 {base['stack_p95']:.2f} ms, CPU {base['cpu_median']:.2f} ms, "
          f"{base['round_trips']:g} round trips")
    print(f"login overhead beyond that baseline: "
          f"{login['overhead_median'] - base['stack_median']:.2f} ms")
    trips = ", ".join(f"{name} {figures[name]['round_trips']:g} (max "
                      f"{figures[name]['round_trips_max']})"
                      for name in ("login", "login (no session)", "refresh"))
    print(f"database round trips per request: {trips}")
    print(f"target: median overhead of login and refresh <= {args.target_ms:g} ms per request "
          f"on {figures['database']} -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
