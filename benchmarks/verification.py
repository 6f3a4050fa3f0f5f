"""CPU per token of ``verify_token`` against ``jwt.decode`` with the same checks.

Mints one Synerise-shaped RS512 token (the claims FakeSynerise issues), then measures, in one
process and interleaved round by round, the CPU time per call of:

* ``jwt.decode`` alone (PyJWT, the naive baseline: what verification called before);
* ``jws_verify`` alone (signature and registered claims: what replaced ``jwt.decode``);
* ``verify_token`` (shape, header, pinned algorithm, ``jws_verify`` and the typed claims);
* the RSA signature alone (the floor: ``cryptography``'s verify).

Run from the repository root::

    .venv/bin/python benchmarks/verification.py [--calls 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from bench_django import site_logging  # noqa: E402

site_logging()

import jwt  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from django.conf import settings  # noqa: E402

from django_synerise.jws import unverified_header  # noqa: E402
from django_synerise.jws_verify import check_claims, verified_payload  # noqa: E402
from django_synerise.verification import _load_key, verify_token  # noqa: E402


def _token(key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    claims = {"iss": "Synerise", "rlm": "client", "origin": "SYNERISE", "clId": 123456789,
              "eml": "ann@example.com", "cId": "cust-1",
              "uuid": "5a3c3f5e-1f0b-4c55-9a57-2d9a8c1b7e10", "bpi": 1234,
              "ctd": now * 1000, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, key, algorithm="RS512", headers={"typ": "JWT"})


def _cpu_us(func: Callable[[], object], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        func()
    return (time.process_time() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args(argv)

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings.SYNERISE = {**settings.SYNERISE, "PUBLIC_KEY": pem}
    token = _token(private)
    key = _load_key(pem)
    signing_input, _, signature = token.rpartition(".")
    header = unverified_header(token)
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))

    variants: dict[str, Callable[[], object]] = {
        "jwt.decode (PyJWT, baseline)": lambda: jwt.decode(
            token, key, algorithms=["RS512"], options={"require": ["exp", "iss"]},
            leeway=30, issuer="Synerise"),
        "jws_verify (replacement)": lambda: check_claims(
            verified_payload(token, header, key, "RS512"), require=["exp", "iss"], leeway=30,
            issuer="Synerise"),
        "verify_token": lambda: verify_token(token),
        "RSA signature alone": lambda: key.verify(
            raw_signature, signing_input.encode(), padding.PKCS1v15(), hashes.SHA512()),
    }
    for func in variants.values():  # warm up
        _cpu_us(func, 200)
    figures: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, func in variants.items():
            figures[name].append(_cpu_us(func, args.calls))

    print(f"token verification, {len(token)}-byte RS512 token, {args.rounds} rounds x "
          f"{args.calls} calls, load average {os.getloadavg()[0]:.1f}")
    for name, values in figures.items():
        print(f"{name:30} CPU µs per call: median {statistics.median(values):6.1f} "
              f"(min {min(values):.1f}, max {max(values):.1f})")
    baseline = statistics.median(figures["jwt.decode (PyJWT, baseline)"])
    for name in ("jws_verify (replacement)", "verify_token"):
        print(f"{name} / jwt.decode: {statistics.median(figures[name]) / baseline:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
