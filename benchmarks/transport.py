"""CPU per Synerise call of the HTTP transports the client could use, in one run.

Usage (PostgreSQL is not needed)::

    python benchmarks/transport.py [--calls 2000]

FakeSynerise runs in another process at zero latency (pre-signed tokens), so this process's
CPU time is the client side only. One thread makes ``--calls`` refresh calls each way,
interleaved in rounds so that load on the machine hits every variant alike:

* ``SyneriseClient.refresh``: the product (breaker, deadline, size cap, strict parsing) over
  its session's route: the urllib3 pool of a ``requests`` session, called directly;
* ``requests Session.post``: the same request through ``requests.Session.request``, which
  is what the client did before (environment, proxy and CA-bundle lookups, header and cookie
  merging, hooks on every call), body read the same way;
* ``urllib3 pool``: the bare request on an ``HTTPConnectionPool`` (no checks at all), the
  floor.

It prints CPU and wall milliseconds per call (medians of the rounds) and the ratios.

``--in-flight N`` measures instead what the refresh pipeline does: ``N`` calls in flight at
once, the fake answering after ``--latency`` seconds (25 ms), as threads (the product's
``SyneriseClient.refresh``, and the bare urllib3 pool) and, where ``aiohttp`` is installed
(``pip install aiohttp``; not a dependency), as ``N`` coroutines on one asyncio event loop
(bare requests: no checks). It prints the process's CPU milliseconds per call and the calls
per second of each, in interleaved rounds: what an async client for the pipeline would save.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_fake(conn: Any, tokens: int, clients: int = 1, latency: float = 0.0) -> None:
    """Child process: FakeSynerise answering after ``latency`` seconds, with ``clients``
    clients of ``tokens`` pre-signed tokens each; sends each client's first token."""
    import django

    django.setup()
    from django_synerise.testing import FakeSynerise

    class BenchFake(FakeSynerise):
        def _schedule_presign(self, key: tuple[str, str, str]) -> None:
            return None

    fake = BenchFake(presign=True, latency=latency, record_requests=False)
    fake.start()
    first = []
    for i in range(clients):
        client = fake.add_client(email=f"bench{i}@example.com")
        first.append(fake.issue_token(client.client_id))
        fake.presign_tokens([client.client_id], count=tokens)
    conn.send({"url": fake.url, "api_key": fake.api_key, "token": first[0], "tokens": first})
    conn.recv()
    fake.stop()


def _report(title: str, cpu: dict[str, list[float]],
            other: tuple[str, dict[str, list[float]], int], base: str, base_label: str) -> None:
    """Print ``title`` with the machine, then per variant the median CPU ms per call, the
    median of ``other`` (its label, figures and decimals) and the CPU ratio to ``base``."""
    label, figures, decimals = other
    print(f"{title}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    width = max(map(len, cpu)) + 1
    ratio = f"CPU vs {base_label}"
    print(f"{'':{width}} {'CPU ms/call':>12} {label:>13} {ratio:>20}")
    for name, values in cpu.items():
        median_cpu, median_other = statistics.median(values), statistics.median(figures[name])
        print(f"{name:{width}} {median_cpu:12.3f} {median_other:13.{decimals}f} "
              f"{median_cpu / statistics.median(cpu[base]):19.2f}x")


def _threads(pool: ThreadPoolExecutor, width: int, per_chain: int, chains: list[str],
             call: Callable[[str], str]) -> Callable[[], None]:
    """``width`` threads of ``pool`` (kept from run to run, as the refresh engine keeps its
    pool), each refreshing its chain of tokens ``per_chain`` times."""

    def chain(i: int) -> None:
        for _ in range(per_chain):
            chains[i] = call(chains[i])

    def run() -> None:
        list(pool.map(chain, range(width)))

    return run


def _event_loop(width: int, per_chain: int, chains: list[str], url: str, body: bytes,
                headers: Callable[[str], dict[str, str]]) -> Callable[[], None] | None:
    """``width`` coroutines on one asyncio loop with aiohttp, each refreshing its chain
    ``per_chain`` times; ``None`` when aiohttp is not installed."""
    try:
        import asyncio

        import aiohttp  # type: ignore[import-not-found]
    except ImportError:
        return None

    async def run() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=width)) as session:

            async def chain(i: int) -> None:
                for _ in range(per_chain):
                    async with session.post(url, data=body, headers=headers(chains[i])) as answer:
                        chains[i] = json.loads(await answer.read())["token"]

            await asyncio.gather(*(chain(i) for i in range(width)))

    return lambda: asyncio.run(run())


def in_flight(args: argparse.Namespace) -> None:
    """``--in-flight``: CPU per call with ``args.in_flight`` calls in flight, threads against
    an event loop (see the module's docstring)."""
    width, per_chain = args.in_flight, max(1, args.calls // args.in_flight // args.rounds)
    parent, child = multiprocessing.Pipe()
    fake = multiprocessing.Process(
        target=run_fake,
        args=(child, 3 * per_chain * (args.rounds + 1) + 20, width, args.latency),
        daemon=True,
    )
    fake.start()
    info = parent.recv()

    import django

    django.setup()
    from bench_django import site_logging

    site_logging()
    import urllib3
    from django.conf import settings

    from django_synerise.client import SyneriseClient

    settings.SYNERISE = {**settings.SYNERISE, "BASE_URL": info["url"], "API_KEY": info["api_key"]}
    path = "/sauth/v3/auth/refresh/client"
    body = json.dumps({"apiKey": info["api_key"]}, separators=(",", ":")).encode()
    chains = list(info["tokens"])
    client = SyneriseClient().frozen()  # as a refresh batch uses it
    pool = urllib3.connection_from_url(info["url"], maxsize=width)

    def headers(token: str) -> dict[str, str]:
        return {"Api-Version": "4.4", "Accept": "application/json",
                "Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def bare(token: str) -> str:
        response = pool.urlopen("POST", path, body=body, headers=headers(token),
                                timeout=urllib3.Timeout(connect=5, read=10), redirect=False)
        return str(response.json()["token"])

    threads = ThreadPoolExecutor(max_workers=width)
    variants: dict[str, Callable[[], None]] = {
        "SyneriseClient.refresh, threads": _threads(
            threads, width, per_chain, chains, lambda token: client.refresh(token).token
        ),
        "urllib3 pool, threads": _threads(threads, width, per_chain, chains, bare),
    }
    loop = _event_loop(width, per_chain, chains, info["url"] + path, body, headers)
    if loop is None:
        print("aiohttp is not installed: the event-loop line is left out (pip install aiohttp)")
    else:
        variants["aiohttp, one event loop"] = loop

    calls = width * per_chain
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    rate: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():  # warm up: each thread's session and connection
        run()
    for _ in range(args.rounds):
        for name, run in variants.items():
            c0, t0 = _cpu(), time.perf_counter()
            run()
            cpu[name].append((_cpu() - c0) * 1000 / calls)
            rate[name].append(calls / (time.perf_counter() - t0))
    threads.shutdown()
    parent.send("stop")
    fake.join(timeout=10)

    _report(
        f"transport: {width} calls in flight, fake latency {args.latency * 1000:.0f} ms in "
        f"another process, {calls} calls per variant in each of {args.rounds} interleaved "
        f"rounds",
        cpu, ("calls/s", rate, 0), "SyneriseClient.refresh, threads", "product",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant (2000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--in-flight", type=int, default=0,
                        help="calls in flight at once: threads against an event loop (0: off)")
    parser.add_argument("--latency", type=float, default=0.025,
                        help="the fake's latency with --in-flight, s (0.025)")
    args = parser.parse_args()
    if args.in_flight:
        in_flight(args)
        return
    per_round = max(1, args.calls // args.rounds)

    parent, child = multiprocessing.Pipe()
    fake = multiprocessing.Process(
        target=run_fake, args=(child, 3 * per_round * args.rounds + 200), daemon=True
    )
    fake.start()
    info = parent.recv()

    import django

    django.setup()
    from bench_django import site_logging

    site_logging()
    import requests
    import urllib3
    from django.conf import settings

    from django_synerise.client import SyneriseClient

    settings.SYNERISE = {
        **settings.SYNERISE,
        "BASE_URL": info["url"],
        "API_KEY": info["api_key"],
    }
    path = "/sauth/v3/auth/refresh/client"
    url = info["url"] + path
    body = json.dumps({"apiKey": info["api_key"]}, separators=(",", ":")).encode()
    state = {"token": info["token"]}
    client = SyneriseClient()

    def product() -> None:
        state["token"] = client.refresh(state["token"]).token

    def headers() -> dict[str, str]:
        return {
            "Api-Version": "4.4",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {state['token']}",
        }

    session = requests.Session()

    def via_session() -> None:
        response = session.post(url, data=body, headers=headers(), timeout=(5, 10),
                                stream=True, allow_redirects=False)
        state["token"] = response.json()["token"]
        response.close()

    pool = urllib3.connection_from_url(info["url"], maxsize=4)

    def via_pool() -> None:
        response = pool.urlopen("POST", path, body=body, headers=headers(),
                                timeout=urllib3.Timeout(connect=5, read=10), redirect=False)
        state["token"] = response.json()["token"]

    variants: dict[str, Callable[[], None]] = {
        "SyneriseClient.refresh": product,
        "requests Session.post": via_session,
        "urllib3 pool": via_pool,
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for call in variants.values():  # warm up: connections, imports, caches
        for _ in range(20):
            call()
    for _ in range(args.rounds):
        for name, call in variants.items():
            c0, t0 = _cpu(), time.perf_counter()
            for _ in range(per_round):
                call()
            cpu[name].append((_cpu() - c0) * 1000 / per_round)
            wall[name].append((time.perf_counter() - t0) * 1000 / per_round)
    parent.send("stop")
    fake.join(timeout=10)

    _report(
        f"transport: {per_round * args.rounds} refresh calls per variant in {args.rounds} "
        f"interleaved rounds, one thread, fake at zero latency in another process",
        cpu, ("wall ms/call", wall, 3), "requests Session.post", "Session.post",
    )


if __name__ == "__main__":
    main()
