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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_fake(conn: Any, tokens: int) -> None:
    """Child process: FakeSynerise at zero latency with ``tokens`` pre-signed tokens."""
    import django

    django.setup()
    from django_synerise.testing import FakeSynerise

    class BenchFake(FakeSynerise):
        def _schedule_presign(self, key: tuple[str, str, str]) -> None:
            return None

    fake = BenchFake(presign=True, latency=0, record_requests=False)
    fake.start()
    client = fake.add_client(email="bench@example.com")
    token = fake.issue_token(client.client_id)
    fake.presign_tokens([client.client_id], count=tokens)
    conn.send({"url": fake.url, "api_key": fake.api_key, "token": token})
    conn.recv()
    fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant (2000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    args = parser.parse_args()
    per_round = max(1, args.calls // args.rounds)

    parent, child = multiprocessing.Pipe()
    fake = multiprocessing.Process(
        target=run_fake, args=(child, 3 * per_round * args.rounds + 200), daemon=True
    )
    fake.start()
    info = parent.recv()

    import django

    django.setup()
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

    print(f"transport: {per_round * args.rounds} refresh calls per variant in {args.rounds} "
          f"interleaved rounds, one thread, fake at zero latency in another process, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    base = statistics.median(cpu["requests Session.post"])
    print(f"{'':26} {'CPU ms/call':>12} {'wall ms/call':>13} {'CPU vs Session.post':>20}")
    for name in variants:
        median_cpu = statistics.median(cpu[name])
        print(f"{name:26} {median_cpu:12.3f} {statistics.median(wall[name]):13.3f} "
              f"{median_cpu / base:19.2f}x")


if __name__ == "__main__":
    main()
