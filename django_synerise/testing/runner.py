"""Run FakeSynerise in the foreground (``python -m django_synerise.testing`` and the command)."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .fake import DEFAULT_API_KEY, FakeSynerise


class Output(Protocol):
    """Where the server reports: ``sys.stdout`` or a management command's ``stdout``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> None: ...


__all__ = ["add_arguments", "parse_client_spec", "run_from_options", "serve"]


def parse_client_spec(spec: str) -> tuple[str, str]:
    """Split ``"email:password"`` into (email, password); raises ValueError when malformed."""
    email, sep, password = spec.partition(":")
    if not sep or not email or not password:
        raise ValueError(f"--client expects EMAIL:PASSWORD, got {spec.split(':')[0]!r}:...")
    return email, password


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake server's options to ``parser`` (argparse or Django's CommandParser)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1)."
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free port)."
    )
    parser.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help=f"The Profile API key to accept (default {DEFAULT_API_KEY!r}): set the same value "
        "as SYNERISE['API_KEY'] of the site that uses this fake.",
    )
    parser.add_argument(
        "--token-lifetime", type=int, default=3600, help="Client token lifetime in seconds."
    )
    parser.add_argument(
        "--business-profile-id", default="1234", help="Value of the tokens' bpi claim."
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="EMAIL:PASSWORD",
        help="Register a SYNERISE client (repeatable).",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="Seconds added to every response."
    )
    parser.add_argument(
        "--presign", action="store_true", help="Hand out pre-signed tokens (benchmarks)."
    )
    parser.add_argument(
        "--public-key-file", default=None, help="Also write the public key PEM to this file."
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str = DEFAULT_API_KEY,
    token_lifetime: int = 3600,
    business_profile_id: str | None = "1234",
    clients: Sequence[tuple[str, str]] = (),
    latency: float = 0.0,
    presign: bool = False,
    public_key_file: str | None = None,
    stdout: Output | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Start a FakeSynerise, print where it listens, and block until Ctrl-C or ``stop_event``."""
    import sys

    out = stdout or sys.stdout
    fake = FakeSynerise(
        api_key=api_key,
        token_lifetime=token_lifetime,
        business_profile_id=business_profile_id,
        host=host,
        port=port,
        latency=latency,
        presign=presign,
    )
    # Ctrl-C may come as soon as the URL is out, before the last lines are written.
    try:
        with fake:
            for email, password in clients:
                client = fake.add_client(email=email, password=password)
                out.write(f"Client {client.client_id}: {email}\n")
            if public_key_file:
                Path(public_key_file).write_text(fake.public_key_pem, encoding="ascii")
                out.write(f"Public key written to {public_key_file}\n")
            out.write(f"FakeSynerise listening on {fake.url}\n")
            out.write(f"API key: {fake.api_key}\n")
            out.write(f"Public key: {fake.url}/v4/public.pem\n")
            out.write(f"Control API: {fake.url}/__fake__/stats\n")
            out.write("Press Ctrl-C to stop.\n")
            out.flush()
            event = stop_event or threading.Event()
            while not event.wait(0.5):
                pass
    except KeyboardInterrupt:
        out.write("Stopping.\n")


def run_from_options(options: dict[str, Any], stdout: Output | None = None) -> None:
    """Run :func:`serve` with parsed options (as :func:`add_arguments` defines them)."""
    serve(
        host=options["host"],
        port=options["port"],
        api_key=options["api_key"],
        token_lifetime=options["token_lifetime"],
        business_profile_id=options["business_profile_id"] or None,
        clients=[parse_client_spec(spec) for spec in options["client"]],
        latency=options["latency"],
        presign=options["presign"],
        public_key_file=options["public_key_file"],
        stdout=stdout,
    )
