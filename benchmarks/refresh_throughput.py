"""Refresh pipeline throughput against a naive loop, on PostgreSQL and FakeSynerise.

Usage (PostgreSQL server required; a scratch database ``<name>_refresh_bench`` is created
and dropped)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        python benchmarks/refresh_throughput.py [--n 5000] [--latency 0.025]

What it does, in one run:

1. starts FakeSynerise in another process (``--latency`` per response, pre-signed tokens:
   every token the fake will hand out is signed before the clock starts, so its RSA cost
   stays out of the figures);
2. seeds ``--n`` due tokens (users, accounts, encrypted tokens) with ``bulk_create``;
3. **pipeline**: a fresh process per worker (``--workers``) loops ``claim_due_tokens()`` +
   ``refresh_batch()`` until nothing is due (the path a Celery worker runs; concurrent HTTP
   over ``--concurrency`` threads, bulk compare-and-swap writes). It counts database queries
   per batch and reports its peak RSS (``getrusage``);
4. **naive**: a fresh process refreshes ``--naive-n`` tokens one by one with a plain
   ``requests.post`` per token (no session), the same verification and encryption, and one
   ``save()`` per row.

It prints one line per figure and the ratio. ``--no-naive`` skips step 4 (for RSS runs at
large N).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_SUFFIX = "_refresh_bench"


# --------------------------------------------------------------------------- Django setup


def configure_django(db_name: str | None = None, synerise: dict[str, Any] | None = None) -> None:
    """This benchmark's settings (see ``bench_django.configure_django``)."""
    from bench_django import configure_django as configure

    configure(db_name, synerise, test_suffix=BENCH_SUFFIX)


# --------------------------------------------------------------------------- fake process


def run_fake(conn: Any, n: int, latency: float, tokens_per_client: int) -> None:
    """Child process: serve FakeSynerise with ``n`` clients and pre-signed tokens."""
    from django_synerise.testing import FakeSynerise

    class BenchFake(FakeSynerise):
        """Pools are filled up front; no signing in the background while measuring."""

        def _schedule_presign(self, key: tuple[str, str, str]) -> None:
            return None

    fake = BenchFake(presign=True, latency=latency, record_requests=False)
    fake.start()
    seeded = []
    for i in range(n):
        client = fake.add_client(email=f"bench{i}@example.com")
        seeded.append((client.client_id, fake.issue_token(client.client_id)))
    fake.presign_tokens([cid for cid, _ in seeded], count=tokens_per_client)
    # The fake makes every token's creation time unique by counting milliseconds up, so
    # signing thousands of tokens a second pushes their ``iat`` ahead of the clock. Wait
    # until the newest one is within the verification leeway (30 s) before measuring.
    from django_synerise.testing.tokens import next_created_ms

    ahead = next_created_ms() / 1000 - time.time()
    if ahead > 10:
        time.sleep(ahead - 10)
    conn.send({"url": fake.url, "api_key": fake.api_key, "public_key": fake.public_key_pem,
               "clients": seeded})
    conn.recv()  # "measure": the clock starts (set-up and pre-signing are not counted)
    cpu_start, served_start = _cpu(), fake.stats().get("requests") or 0
    conn.recv()  # wait for "stop"
    conn.send({"requests": (fake.stats().get("requests") or 0) - served_start,
               "cpu": _cpu() - cpu_start})
    fake.stop()


# --------------------------------------------------------------------------- seeding


def seed(clients: list[tuple[str, str]], chunk: int = 2000) -> list[int]:
    """Create a user, an account and a due token per client; returns the token ids."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from django_synerise.crypto import encrypt_token
    from django_synerise.models import ClientToken, SyneriseAccount

    user_model = get_user_model()
    now = timezone.now()
    token_ids: list[int] = []
    for start in range(0, len(clients), chunk):
        part = clients[start:start + chunk]
        users = user_model.objects.bulk_create(
            [user_model(username=f"bench{client_id}", password="!unusable")  # noqa: S106
             for client_id, _ in part]
        )
        accounts = SyneriseAccount.objects.bulk_create(
            [SyneriseAccount(user=user, client_id=client_id)
             for user, (client_id, _) in zip(users, part, strict=True)]
        )
        tokens = ClientToken.objects.bulk_create(
            [
                ClientToken(
                    account=account,
                    encrypted_token=encrypt_token(token, account_id=account.pk,
                                                  client_id=account.client_id),
                    expires_at=now + timedelta(minutes=59),
                    # Due over the last five minutes (distinct targets, as jitter makes them).
                    refresh_at=now - timedelta(seconds=1 + 300 * (start + i) / len(clients)),
                    issued_at=now,
                    last_used_at=now,
                )
                for i, (account, (_, token)) in enumerate(zip(accounts, part, strict=True))
            ]
        )
        token_ids.extend(t.pk for t in tokens)
    return token_ids


# --------------------------------------------------------------------------- measured code


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    ``VmHWM`` from ``/proc/self/status`` where available: unlike ``getrusage().ru_maxrss``
    it is not inherited from the parent across ``fork`` + ``exec`` (Linux keeps the larger
    of the two in ``ru_maxrss``, which would report the seeding process's memory).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (``VmRSS``; 0 where not on Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def rss_curve(samples: list[tuple[int, float]]) -> dict[str, float]:
    """Resident MiB after a worker's first 5,000 tokens (or its first tenth, if fewer), at
    half of its tokens and at its end, from ``(tokens so far, MiB)`` taken after each batch:
    a leak grows all the way, an allocator warming up flattens."""
    if not samples:
        return {}
    total = samples[-1][0]

    def at(tokens: int) -> float:
        return next(mib for done, mib in samples if done >= tokens)

    early, half = min(5000, max(1, total // 10)), max(1, total // 2)
    return {"early_tokens": early, "early": at(early), "half_tokens": half,
            "half": at(half), "end_tokens": total, "end": samples[-1][1]}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up() -> None:
    """What a process does once before its first token, kept out of the figures as start-up:
    fetch the public key, import the configured adapter and ``prometheus_client`` (which the
    first recorded metric imports: about 40 ms of CPU on a 2-core machine)."""
    from django_synerise import metrics
    from django_synerise.conf import synerise_settings
    from django_synerise.verification import get_public_key

    get_public_key()
    synerise_settings.import_setting("ADAPTER")
    metrics.available()


def pipeline_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Refresh every due token with claim_due_tokens + refresh_batch; return the figures."""
    configure_django(config["db_name"], config["synerise"])
    from django.db import connection

    from django_synerise.services.refresh import Claim, claim_due_tokens, refresh_batch, split

    warm_up()
    via_message = config.get("via_message", True)
    counter = {"n": 0}

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counter["n"] += 1
        return execute(sql, params, many, context)

    rss_before = peak_rss_mb()
    cpu_before = _cpu()
    claim_queries: list[int] = []
    refresh_queries: list[int] = []
    resident: list[tuple[int, float]] = []
    refreshed = failed = 0
    start = time.perf_counter()
    size = config["synerise"]["REFRESH_BATCH_SIZE"]
    per_claim = config.get("claim_batches", 1)
    with connection.execute_wrapper(count):
        while True:
            counter["n"] = 0
            claim = claim_due_tokens(limit=size * per_claim)
            if not claim:
                break
            batches = split(list(claim.ids), size)
            claim_queries.extend([counter["n"] / len(batches)] * len(batches))
            for ids in batches:
                counter["n"] = 0
                if via_message:  # what a Celery worker receives: ids + lease, rows taken over
                    report = refresh_batch(Claim.from_message(ids, claim.lease_iso()))
                else:
                    report = refresh_batch(claim)
                refresh_queries.append(counter["n"])
                refreshed += len(report.refreshed)
                failed += len(report.failed_transient) + len(report.needs_login)
                resident.append((refreshed + failed, rss_mb()))
            del claim, report
    elapsed = time.perf_counter() - start
    return {
        "refreshed": refreshed,
        "failed": failed,
        "elapsed": elapsed,
        "batches": len(refresh_queries),
        "claim_queries_max": max(claim_queries or [0]),
        "refresh_queries_max": max(refresh_queries or [0]),
        "queries_per_batch_max": max((c + r for c, r in zip(claim_queries, refresh_queries,
                                                             strict=True)), default=0),
        "rss_before_mb": rss_before,
        "cpu": _cpu() - cpu_before,
        "peak_rss_mb": peak_rss_mb(),
        "rss_curve": rss_curve(resident),
    }


def cron_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run ``manage.py synerise_refresh_tokens`` once; CPU and time exclude start-up.

    Start-up (interpreter, Django set-up, imports, the public key) happens before the clock
    starts; the figures cover the command's ``handle`` from its first claim to its summary
    line. Queries are counted per batch: a batch starts at its claim (the ``SKIP LOCKED``
    select).
    """
    configure_django(config["db_name"], config["synerise"])
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection

    import django_synerise.management.commands.synerise_refresh_tokens  # noqa: F401

    warm_up()
    batches: list[int] = []

    claim_statements = [2]

    run_queries = [0]  # before the first claim: the run's record and the halt check

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "SKIP LOCKED" in sql:
            batches.append(0)
            if sql.lstrip().startswith("WITH"):
                claim_statements[0] = 1
        if batches:
            batches[-1] += 1
        else:
            run_queries[0] += 1
        return execute(sql, params, many, context)

    out = StringIO()
    rss_before = peak_rss_mb()
    cpu_before = _cpu()
    start = time.perf_counter()
    with connection.execute_wrapper(count):
        call_command("synerise_refresh_tokens", stdout=out)
    elapsed = time.perf_counter() - start
    cpu = _cpu() - cpu_before
    summary = dict(part.split("=") for part in out.getvalue().split())
    # The last segment is the claim that found nothing due (one query).
    work = batches[:-1] if batches and batches[-1] == 1 else batches
    return {
        "refreshed": int(summary["refreshed"]),
        "failed": int(summary["failed"]) + int(summary["needs_login"]),
        "elapsed": elapsed,
        "batches": len(work),
        "claim_queries_max": claim_statements[0],
        # The claim is the first statement or two of a batch (one UPDATE ... RETURNING on
        # PostgreSQL); the rest is refresh_batch.
        "refresh_queries_max": max(work or [0]) - claim_statements[0],
        "queries_per_batch_max": max(work or [0]),
        "rss_before_mb": rss_before,
        "cpu": cpu,
        "peak_rss_mb": peak_rss_mb(),
    }


def naive_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Refresh ``naive_n`` due tokens one at a time: plain requests.post and save() per row."""
    configure_django(config["db_name"], config["synerise"])
    import requests

    from django_synerise.client import AuthResult
    from django_synerise.models import ClientToken
    from django_synerise.services.tokens import prepare_token

    warm_up()
    url = config["synerise"]["BASE_URL"] + "/sauth/v3/auth/refresh/client"
    api_key = config["synerise"]["API_KEY"]
    rows = list(ClientToken.objects.select_related("account")
                .filter(pk__in=config["naive_ids"]))
    refreshed = 0
    cpu_before = _cpu()
    start = time.perf_counter()
    for row in rows:
        response = requests.post(
            url, json={"apiKey": api_key}, timeout=10,
            headers={"Authorization": f"Bearer {row.get_token()}", "Api-Version": "4.4"},
        )
        response.raise_for_status()
        data = response.json()
        result = AuthResult(token=data["token"], expiration=None, created=None,
                            origin=data.get("origin"), realm=data.get("realm"),
                            custom_id=data.get("customId"))
        prepared = prepare_token(row.account, result)
        for name, value in prepared.row_values().items():
            setattr(row, name, value)
        row.version += 1
        row.save()
        refreshed += 1
    elapsed = time.perf_counter() - start
    return {"refreshed": refreshed, "elapsed": elapsed, "cpu": _cpu() - cpu_before,
            "peak_rss_mb": peak_rss_mb()}


def _run_child(role: str, config: dict[str, Any]) -> subprocess.Popen[str]:
    """Start a measuring child process and hand it ``config`` (it starts at once)."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--role", role],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(config))
    process.stdin.close()
    return process


def _child_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    out = process.stdout.read()
    process.wait()
    if process.returncode != 0:
        sys.exit(f"benchmark child failed with exit code {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="due tokens to seed (5000)")
    parser.add_argument("--latency", type=float, default=0.025, help="fake latency, s (0.025)")
    parser.add_argument("--batch-size", type=int, default=100, help="REFRESH_BATCH_SIZE (100)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="REFRESH_CONCURRENCY: HTTP threads per worker (32)")
    parser.add_argument("--workers", type=int, default=2,
                        help="pipeline worker processes, like Celery prefork children (2)")
    parser.add_argument("--naive-n", type=int, default=400,
                        help="tokens the naive loop refreshes (400; it is slow)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--claim-batches", type=int, default=10,
                        help="batches claimed per claim transaction, like the beat task (10)")
    parser.add_argument("--in-process", action="store_true",
                        help="refresh the claimed rows directly (the cron path) instead of "
                             "rebuilding each claim from a task message (the Celery path)")
    parser.add_argument("--cron", action="store_true",
                        help="run the cron command (manage.py synerise_refresh_tokens) in one "
                             "fresh process instead of the worker loop")
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        config = json.loads(sys.stdin.read())
        worker = {"pipeline": pipeline_worker, "cron": cron_worker, "naive": naive_worker}[
            args.role
        ]
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            result = profiler.runcall(worker, config)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        else:
            result = worker(config)
        print(json.dumps(result))
        return

    configure_django()
    from django.db import connection

    parent, child = multiprocessing.Pipe()
    naive_n = 0 if args.no_naive else min(args.naive_n, args.n)
    fake_process = multiprocessing.Process(
        target=run_fake, args=(child, args.n, args.latency, 1 + (1 if naive_n else 0)),
        daemon=True,
    )
    t0 = time.perf_counter()
    fake_process.start()
    info = parent.recv()
    fake_seconds = time.perf_counter() - t0

    original_name = connection.settings_dict["NAME"]
    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True,
                                                 serialize=False, keepdb=False)
    try:
        t0 = time.perf_counter()
        token_ids = seed(info["clients"])
        seed_seconds = time.perf_counter() - t0
        connection.close()
        synerise = {
            "BASE_URL": info["url"],
            "API_KEY": info["api_key"],
            "PUBLIC_KEY": info["public_key"],
            "REFRESH_BATCH_SIZE": args.batch_size,
            "REFRESH_CONCURRENCY": args.concurrency,
            "BREAKER_THRESHOLD": 10_000,
        }
        config = {"db_name": db_name, "synerise": synerise, "via_message": not args.in_process,
                  "claim_batches": 1 if args.in_process else max(1, args.claim_batches)}
        from bench_django import machine_line

        print(machine_line(connection))
        print(f"setup: fake with {args.n} clients in {fake_seconds:.1f} s, "
              f"seeded {len(token_ids)} due tokens in {seed_seconds:.1f} s")

        parent.send("measure")
        if args.cron:
            processes = [_run_child("cron", config)]
        else:
            processes = [_run_child("pipeline", config) for _ in range(max(1, args.workers))]
        results = [_child_result(p) for p in processes]
        total = sum(r["refreshed"] for r in results)
        elapsed = max(r["elapsed"] for r in results)
        pipeline_rate = total / elapsed

        print(f"pipeline tokens refreshed: {total} of {args.n} "
              f"({sum(r['failed'] for r in results)} failed)")
        if args.cron:
            mode = "cron command (manage.py synerise_refresh_tokens)"
        elif args.in_process:
            mode = "cron path (claim, refresh_batch)"
        else:
            mode = "Celery path (claim, message, take)"
        print(f"pipeline workers x threads: {len(results)} x {args.concurrency}, "
              f"batch size {args.batch_size}, latency {args.latency * 1000:.0f} ms, "
              f"{mode}")
        print(f"pipeline tokens/s: {pipeline_rate:.1f}")
        print(f"pipeline batches: {sum(r['batches'] for r in results)}")
        per_worker = ", ".join(f"{r['refreshed']} tokens/{r['cpu']:.1f} s CPU" for r in results)
        print(f"pipeline per worker: {per_worker}, wall {elapsed:.1f} s")
        pipeline_cpu = sum(r["cpu"] for r in results) * 1000 / max(1, total)
        print(f"pipeline CPU ms per token (start-up excluded): {pipeline_cpu:.2f}")
        print(f"queries per batch, refresh_batch: "
              f"{max(r['refresh_queries_max'] for r in results)} (max)")
        print(f"queries per batch, claim share + refresh_batch: "
              f"{max(r['queries_per_batch_max'] for r in results):g} (max)")
        print(f"pipeline peak RSS per worker (MiB): "
              f"{max(r['peak_rss_mb'] for r in results):.1f} "
              f"(after setup {max(r['rss_before_mb'] for r in results):.1f})")
        curves = [r["rss_curve"] for r in results if r.get("rss_curve")]
        if curves:
            shown = "; ".join(
                f"{c['early']:.1f} at {c['early_tokens']}, {c['half']:.1f} at "
                f"{c['half_tokens']}, {c['end']:.1f} at {c['end_tokens']} tokens" for c in curves)
            print(f"pipeline RSS per worker, MiB after its first tokens, half and all: {shown}")

        if naive_n:
            from django.utils import timezone

            from django_synerise.models import ClientToken

            connection.connect()
            sample = token_ids[:naive_n]
            ClientToken.objects.filter(pk__in=sample).update(refresh_at=timezone.now())
            connection.close()
            naive_config = {**config, "naive_ids": sample}
            naive = _child_result(_run_child("naive", naive_config))
            naive_rate = naive["refreshed"] / naive["elapsed"]
            print(f"naive tokens refreshed: {naive['refreshed']}")
            print(f"naive tokens/s: {naive_rate:.1f}")
            print(f"naive CPU ms per token: {naive['cpu'] * 1000 / max(1, naive['refreshed']):.2f}")
            print("naive queries per token: 1 (save)")
            print(f"ratio pipeline/naive: {pipeline_rate / naive_rate:.1f}x")
    finally:
        parent.send("stop")
        stats = parent.recv() if parent.poll(10) else {}
        if stats:
            served = stats.get("requests") or 0
            print(f"fake requests served while measuring: {served} (fake CPU {stats['cpu']:.1f} s, "
                  f"{stats['cpu'] * 1000 / max(1, served):.2f} ms per request, on the same "
                  "cores)")
        fake_process.join(timeout=10)
        if not args.keep_db:
            connection.creation.destroy_test_db(original_name, verbosity=0)


if __name__ == "__main__":
    main()
