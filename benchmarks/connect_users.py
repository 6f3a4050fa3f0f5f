"""Provisioning with ``synerise_connect_users`` against a naive loop, on PostgreSQL and
FakeSynerise in its OAUTH "JWT token" mode.

Usage (PostgreSQL server required; a scratch database ``<name>_connect_bench`` is created and
dropped)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        python benchmarks/connect_users.py [--n 5000] [--latency 0.025]

What it does, in one run:

1. generates an EC P-256 signing key and serves this "site's" JWKS from a small HTTP server
   in this process (the fake fetches it once and caches it, as Synerise does);
2. starts FakeSynerise in another process with ``--latency`` per response, trusting that
   JWKS (every login verifies the identity token, registers a profile and signs a client
   token: the fake's RS512 signing is its own CPU, reported apart);
3. seeds ``--n`` site users plus ``--naive-n`` more with ``bulk_create``;
4. **naive**: a fresh process connects the ``--naive-n`` users one at a time with
   ``services.connect(user)`` (what a site would write in a loop);
5. **command**: a fresh process runs ``manage.py synerise_connect_users --only-missing
   --batch-size B`` (concurrent batches, each answer stored as it arrives) for the ``--n``
   others.

It prints users per second, CPU milliseconds per user of each measuring process, and the
ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import resource
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_SUFFIX = "_connect_bench"
ISSUER = "https://bench-site.example"
AUDIENCE = "bench-workspace"


def configure_django(db_name: str | None = None, synerise: dict[str, Any] | None = None) -> None:
    """This benchmark's settings (see ``bench_django.configure_django``)."""
    from bench_django import configure_django as configure

    configure(db_name, synerise, test_suffix=BENCH_SUFFIX)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- the "site"


def serve_jwks(jwks: dict[str, Any]) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``jwks`` at ``/jwks.json`` on a free loopback port; return (server, URL)."""
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"


def run_fake(conn: Any, latency: float, jwks_url: str) -> None:
    """Child process: FakeSynerise trusting the site's JWKS (JWT mode)."""
    from django_synerise.testing import FakeSynerise

    fake = FakeSynerise(
        latency=latency,
        record_requests=False,
        oauth_mode="jwt",
        oauth_jwks_url=jwks_url,
        oauth_issuer=ISSUER,
        oauth_audience=AUDIENCE,
        oauth_jwks_ttl=3600,
    )
    fake.start()
    conn.send({"url": fake.url, "api_key": fake.api_key, "public_key": fake.public_key_pem})
    conn.recv()  # wait for "stop"
    conn.send({**fake.stats(), "cpu": _cpu(), "clients": len(fake.clients)})
    fake.stop()


def seed(n: int, prefix: str) -> list[int]:
    """Create ``n`` site users (Django passwords); return their ids."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    ids: list[int] = []
    for start in range(0, n, 2000):
        users = user_model.objects.bulk_create(
            [
                user_model(
                    username=f"{prefix}{i}",
                    email=f"{prefix}{i}@example.com",
                    first_name="Bench",
                    last_name=f"User {i}",
                    password="!unusable",  # noqa: S106
                )
                for i in range(start, min(n, start + 2000))
            ]
        )
        ids.extend(u.pk for u in users)
    return ids


# --------------------------------------------------------------------------- measured code


def command_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run ``synerise_connect_users --only-missing``; return the figures."""
    configure_django(config["db_name"], config["synerise"])
    from django.core.management import call_command

    from django_synerise.verification import get_public_key

    get_public_key()
    out = io.StringIO()
    cpu_before = _cpu()
    start = time.perf_counter()
    call_command(
        "synerise_connect_users", "--only-missing", "--batch-size", str(config["batch"]),
        stdout=out,
    )
    elapsed = time.perf_counter() - start
    lines = out.getvalue().strip().splitlines()
    counts = dict(item.split("=") for item in lines[-1].split())
    return {
        "connected": int(counts["connected"]),
        "failed": int(counts["failed"]) + int(counts["retry"]),
        "elapsed": elapsed,
        "cpu": _cpu() - cpu_before,
        "progress_lines": sum(1 for line in lines if line.startswith("progress: ")),
    }


def naive_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Connect the naive users one at a time with ``services.connect``."""
    configure_django(config["db_name"], config["synerise"])
    from django.contrib.auth import get_user_model

    from django_synerise import services
    from django_synerise.verification import get_public_key

    get_public_key()
    users = list(get_user_model().objects.filter(pk__in=config["naive_ids"]).order_by("pk"))
    cpu_before = _cpu()
    start = time.perf_counter()
    for user in users:
        services.connect(user)
    elapsed = time.perf_counter() - start
    return {"connected": len(users), "elapsed": elapsed, "cpu": _cpu() - cpu_before}


def _run_child(role: str, config: dict[str, Any]) -> dict[str, Any]:
    process = subprocess.run(
        [sys.executable, __file__, "--role", role],
        input=json.dumps(config), capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if process.returncode != 0:
        sys.exit(f"benchmark child {role} failed:\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="users the command connects (5000)")
    parser.add_argument("--latency", type=float, default=0.025, help="fake latency, s (0.025)")
    parser.add_argument("--batch-size", type=int, default=100, help="--batch-size (100)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="REFRESH_CONCURRENCY: HTTP threads (32)")
    parser.add_argument("--naive-n", type=int, default=300,
                        help="users the naive loop connects (300; it is slow)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        config = json.loads(sys.stdin.read())
        worker = command_worker if args.role == "command" else naive_worker
        print(json.dumps(worker(config)))
        return

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    oauth = {"OAUTH_SIGNING_KEYS": [key_pem], "OAUTH_ISSUER": ISSUER, "OAUTH_AUDIENCE": AUDIENCE}
    configure_django(synerise=oauth)
    from django.db import connection

    from django_synerise.signing import jwks

    server, jwks_url = serve_jwks(jwks())
    parent, child = multiprocessing.Pipe()
    fake_process = multiprocessing.Process(
        target=run_fake, args=(child, args.latency, jwks_url), daemon=True
    )
    fake_process.start()
    info = parent.recv()

    db_name = connection.creation.create_test_db(verbosity=0, autoclobber=True,
                                                 serialize=False, keepdb=False)
    try:
        t0 = time.perf_counter()
        naive_ids = seed(args.naive_n, "naive")
        seed(args.n, "bench")
        print(f"setup: seeded {args.n} + {args.naive_n} site users in "
              f"{time.perf_counter() - t0:.1f} s")
        connection.close()
        synerise = {
            **oauth,
            "BASE_URL": info["url"],
            "API_KEY": info["api_key"],
            "PUBLIC_KEY": info["public_key"],
            "REFRESH_BATCH_SIZE": args.batch_size,
            "REFRESH_CONCURRENCY": args.concurrency,
            "BREAKER_THRESHOLD": 10_000,
        }
        config = {"db_name": db_name, "synerise": synerise, "batch": args.batch_size,
                  "naive_ids": naive_ids}

        naive = _run_child("naive", config)
        command = _run_child("command", config)
        naive_rate = naive["connected"] / naive["elapsed"]
        command_rate = command["connected"] / command["elapsed"]
        print(f"latency {args.latency * 1000:.0f} ms, batch {args.batch_size}, "
              f"{args.concurrency} threads")
        print(f"command users connected: {command['connected']} of {args.n} "
              f"({command['failed']} failed), {command['progress_lines']} progress lines")
        print(f"command users/s: {command_rate:.1f} (wall {command['elapsed']:.1f} s)")
        print(f"command CPU ms per user: {1000 * command['cpu'] / command['connected']:.2f}")
        print(f"naive users connected: {naive['connected']}")
        print(f"naive users/s: {naive_rate:.1f} (wall {naive['elapsed']:.1f} s)")
        print(f"naive CPU ms per user: {1000 * naive['cpu'] / naive['connected']:.2f}")
        print(f"ratio command/naive: {command_rate / naive_rate:.1f}x")
        parent.send("stop")
        stats = parent.recv()
        print(f"fake: {stats['clients']} profiles registered, "
              f"{stats['requests']} requests, CPU {stats['cpu']:.1f} s (its own signing)")
    finally:
        server.shutdown()
        connection.creation.destroy_test_db(db_name, verbosity=0)
        fake_process.terminate()


if __name__ == "__main__":
    main()
