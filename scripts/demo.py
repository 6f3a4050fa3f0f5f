#!/usr/bin/env python
"""Run the example site with one command: FakeSynerise, Django and a Celery worker with beat.

``make demo`` runs this after installing the project. Steps: check the ports, start the bundled
FakeSynerise (unless ``SYNERISE_API_KEY`` is set), migrate the SQLite database under
``example_project/var/``, create the demo superuser and Synerise clients (and print their
credentials), then start ``manage.py runserver`` and ``celery -A example_project worker -B``.
Ctrl-C (SIGINT) or SIGTERM stops every child process; if one child dies, the others are stopped
and the exit status is 1. Exit status 2 means a port is busy or start-up failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"

#: Request-log lines of runserver that would drown everything else (page polling, assets).
QUIET_PATHS = ('"GET /account/status/', '"GET /static/', '"GET /favicon.ico')


def is_noise(name: str, line: str) -> bool:
    """Return whether a child's output line is routine chatter not worth printing."""
    if name == "django":
        return any(quiet in line for quiet in QUIET_PATHS)
    if name == "celery":
        # The refresh task runs every few seconds; print only runs that did something.
        return "Sending due task django-synerise-" in line or (
            "refresh_expiring_tokens[" in line and (" received" in line or "'tokens': 0}" in line)
        )
    return False


class StartupError(Exception):
    """The demo cannot start (busy port, failed migration, a server that never answered)."""


def env_default(name: str, default: str) -> str:
    """Return environment variable ``name`` or ``default`` when unset or empty."""
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; every option also has an environment variable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host",
        default=env_default("DEMO_HOST", "127.0.0.1"),
        help="address Django listens on (DEMO_HOST, default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env_default("DEMO_PORT", "8000")),
        help="Django port (DEMO_PORT, default 8000)",
    )
    parser.add_argument(
        "--fake-port",
        type=int,
        default=int(env_default("DEMO_FAKE_PORT", "8765")),
        help="FakeSynerise port (DEMO_FAKE_PORT, default 8765)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=int(env_default("DEMO_TOKEN_LIFETIME", "300")),
        help="lifetime in seconds of the fake's client tokens (DEMO_TOKEN_LIFETIME, default 300)",
    )
    parser.add_argument(
        "--beat-interval",
        type=float,
        default=float(env_default("DEMO_BEAT_INTERVAL", "10")),
        help="seconds between two beat runs of the refresh task (DEMO_BEAT_INTERVAL, default 10)",
    )
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=Path(env_default("DEMO_VAR_DIR", str(EXAMPLE / "var"))),
        help="database, broker and beat files (DEMO_VAR_DIR)",
    )
    parser.add_argument(
        "--reset", action="store_true", help="delete the var directory first (fresh database)"
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="do not start the Celery worker (no background refresh)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each server to answer",
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- helpers


def check_port_free(host: str, port: int, what: str, hint: str) -> None:
    """Raise :class:`StartupError` with a clear message when ``host:port`` is in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"Port {port} on {host} ({what}) is already in use: {exc.strerror}.\n"
                f"Stop the program using it (another demo still running?) or {hint}."
            ) from exc


def wait_for_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, name: str = "server"
) -> None:
    """Poll ``url`` until it answers any HTTP status; raise :class:`StartupError` on timeout
    or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StartupError(f"{name} exited with status {proc.returncode} during start-up.")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except OSError:
            time.sleep(0.2)
    raise StartupError(f"{name} did not answer at {url} within {timeout:.0f} s.")


class Supervisor:
    """Starts child processes in their own process groups, prefixes their output, stops them."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.ready = threading.Event()  # set when the Celery worker says "ready"
        self._print_lock = threading.Lock()

    def say(self, text: str) -> None:
        """Print one line of the supervisor's own output."""
        with self._print_lock:
            print(text, flush=True)

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``cmd`` (own session, so Ctrl-C reaches only us) and stream its output."""
        proc = subprocess.Popen(  # noqa: S603 - fixed argv built here
            cmd,
            cwd=EXAMPLE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, proc))
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(name, proc.stdout), daemon=True).start()
        return proc

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if is_noise(name, line):
                continue
            if name == "celery" and " ready." in line:
                self.ready.set()
            with self._print_lock:
                print(f"[{name:6}] {line}", flush=True)

    def dead_child(self) -> tuple[str, int] | None:
        """Return ``(name, returncode)`` of the first child that has exited, if any."""
        for name, proc in self.children:
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every child (newest first; Celery stops its own pool), then SIGKILL the
        process group of any child still running after ``timeout`` seconds."""
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    proc.terminate()
        deadline = time.monotonic() + timeout
        for _name, proc in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Worker pool processes live in the same group; make sure none is left behind.
        for _name, proc in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def run_manage(args: list[str], env: dict[str, str]) -> str:
    """Run ``manage.py <args>`` to completion; return stdout or raise :class:`StartupError`."""
    result = subprocess.run(  # noqa: S603 - fixed argv built here
        [sys.executable, str(EXAMPLE / "manage.py"), *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        raise StartupError(
            f"manage.py {' '.join(args)} failed (status {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def child_env(
    args: argparse.Namespace, use_fake: bool, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the environment of every child: ``environ`` (default: this process's) plus
    the settings module, paths and demo timings."""
    env = dict(os.environ if environ is None else environ)
    paths = [str(EXAMPLE), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        PYTHONPATH=os.pathsep.join(paths),
        PYTHONUNBUFFERED="1",
        DEMO_VAR_DIR=str(args.var_dir),
        DEMO_BEAT_INTERVAL=str(args.beat_interval),
    )
    if not env.get("SYNERISE_TOKEN_ENCRYPTION_KEYS"):
        env["SYNERISE_TOKEN_ENCRYPTION_KEYS"] = demo_encryption_key(args.var_dir)
    if not env.get("SYNERISE_OAUTH_SIGNING_KEY_FILE"):
        env["SYNERISE_OAUTH_SIGNING_KEY_FILE"] = str(demo_oauth_key(args.var_dir))
    if getattr(args, "port", None):
        env.setdefault("DEMO_SITE_URL", f"http://{getattr(args, 'host', '127.0.0.1')}:{args.port}")
    if use_fake:
        env["SYNERISE_FAKE_URL"] = f"http://127.0.0.1:{args.fake_port}"
        # Refresh when about 80 % of the short demo lifetime is left. The system checks want
        # REFRESH_MARGIN >= 60 s and REFRESH_MARGIN + REFRESH_JITTER <= 3000 s.
        jitter = max(0, int(args.token_lifetime * 0.1))
        env.setdefault("SYNERISE_REFRESH_JITTER", str(jitter))
        env.setdefault(
            "SYNERISE_REFRESH_MARGIN", str(max(60 + jitter, int(args.token_lifetime * 0.8)))
        )
    return env


def demo_encryption_key(var_dir: Path) -> str:
    """Return the demo's Fernet key for stored tokens, created once in ``var_dir``.

    Production sites set ``TOKEN_ENCRYPTION_KEYS`` from a secret store; the demo keeps its key
    next to its database so the stored tokens survive a restart.
    """
    from cryptography.fernet import Fernet

    key_file = var_dir / "token-encryption.key"
    if not key_file.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(Fernet.generate_key())
        key_file.chmod(0o600)
    return key_file.read_text(encoding="ascii").strip()


def demo_oauth_key(var_dir: Path) -> Path:
    """Return the file of the demo's identity-provider signing key (EC P-256), created once.

    The site signs the identity tokens it vouches for its users with it (``OAUTH_SIGNING_KEYS``);
    its public half is served at ``/synerise/oauth/jwks.json``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_file = var_dir / "oauth-signing-key.pem"
    if not key_file.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
    return key_file


def banner(site: str, credentials: dict[str, object], use_fake: bool, worker: bool) -> str:
    """Return the text printed once everything answers."""
    admin = credentials.get("admin", {})
    assert isinstance(admin, dict)
    lines = [
        "",
        "=" * 72,
        f"  django-synerise demo is running:  {site}/",
        "",
        f"  Sign in           {site}/login/",
        f"  Account page      {site}/account/",
        f"  Admin (tokens)    {site}/admin/django_synerise/clienttoken/",
        f"  HTTP API          {site}/api/",
        "",
        f"  Admin login:      {admin.get('username')} / {admin.get('password')}",
    ]
    clients = credentials.get("clients") or []
    assert isinstance(clients, list)
    for client in clients:
        lines.append(f"  Synerise client:  {client['email']} / {client['password']}")
    site_user = credentials.get("site_user")
    if isinstance(site_user, dict):
        lines.append(
            f"  Site account:     {site_user['username']} / {site_user['password']} "
            "(Synerise token through OAUTH)"
        )
    if use_fake:
        lines.append("  Google / Apple / Facebook: demo buttons on the sign-in page")
        lines.append("  Synerise:         FakeSynerise (set SYNERISE_API_KEY for the real API)")
    else:
        lines.append("  Synerise:         the real API (SYNERISE_API_KEY is set)")
    if not worker:
        lines.append("  Celery worker:    not started (no background refresh)")
    lines += ["", "  Press Ctrl-C to stop everything.", "=" * 72, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, sup: Supervisor) -> int:
    """Start everything and supervise until a signal or a child's death; return the status."""
    use_fake = not os.environ.get("SYNERISE_API_KEY")
    args.var_dir = args.var_dir.resolve()
    check_port_free(args.host, args.port, "Django", "set DEMO_PORT / --port to another port")
    if use_fake:
        check_port_free(
            "127.0.0.1",
            args.fake_port,
            "FakeSynerise",
            "set DEMO_FAKE_PORT / --fake-port to another port",
        )
    if args.reset and args.var_dir.exists():
        shutil.rmtree(args.var_dir)
    for sub in ("", "broker/queue", "broker/control", "broker/processed"):
        (args.var_dir / sub).mkdir(parents=True, exist_ok=True)
    env = child_env(args, use_fake)

    if use_fake:
        sup.say(
            f"Starting FakeSynerise on 127.0.0.1:{args.fake_port} "
            f"(tokens live {args.token_lifetime} s)..."
        )
        fake = sup.start(
            "fake",
            [
                sys.executable,
                "-m",
                "django_synerise.testing",
                "--host",
                "127.0.0.1",
                "--port",
                str(args.fake_port),
                "--token-lifetime",
                str(args.token_lifetime),
            ],
            env,
        )
        wait_for_http(
            f"http://127.0.0.1:{args.fake_port}/v4/public.pem",
            args.startup_timeout,
            fake,
            "FakeSynerise",
        )

    database = "DATABASE_URL" if env.get("DATABASE_URL") else args.var_dir / "db.sqlite3"
    sup.say(f"Migrating the database ({database})...")
    run_manage(["migrate", "--noinput"], env)
    credentials = json.loads(run_manage(["demo_setup", "--json"], env).strip().splitlines()[-1])

    site = f"http://{args.host}:{args.port}"
    sup.say(f"Starting Django on {site}/ ...")
    django = sup.start(
        "django",
        [
            sys.executable,
            str(EXAMPLE / "manage.py"),
            "runserver",
            f"{args.host}:{args.port}",
            "--noreload",
            "--insecure",  # serve static files even with DJANGO_DEBUG=0
        ],
        env,
    )

    worker = not args.no_worker
    if worker and not has_celery():
        sup.say("Celery is not installed (pip install -e '.[celery]'): no background refresh.")
        worker = False
    if worker:
        sup.say(
            f"Starting the Celery worker with beat (refresh task every "
            f"{args.beat_interval:g} s, broker: {broker_label(env, args.var_dir)})..."
        )
        sup.start(
            "celery",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "example_project",
                "worker",
                "-B",
                "--loglevel",
                "INFO",
                "--concurrency",
                "2",
                "--hostname",
                f"demo-{args.port}@%h",
                "--schedule",
                str(args.var_dir / "celerybeat-schedule"),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env,
        )

    wait_for_http(f"{site}/login/", args.startup_timeout, django, "Django")
    if worker and not sup.ready.wait(args.startup_timeout):
        raise StartupError(f"The Celery worker was not ready within {args.startup_timeout:.0f} s.")
    sup.say(banner(site, credentials, use_fake, worker))
    sup.say(f"DEMO READY {site}/")

    while True:
        dead = sup.dead_child()
        if dead is not None:
            sup.say(f"{dead[0]} exited with status {dead[1]}; stopping the demo.")
            return 1
        time.sleep(0.5)


def broker_label(env: dict[str, str], var_dir: Path) -> str:
    """Describe the Celery broker without printing credentials from its URL."""
    url = env.get("CELERY_BROKER_URL")
    if not url:
        return f"files under {var_dir / 'broker'}"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"


def has_celery() -> bool:
    """Return whether Celery can be imported by the children's interpreter."""
    try:
        import celery  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the demo; always stop every child before returning."""
    args = parse_args(argv)
    sup = Supervisor()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run(args, sup)
    except KeyboardInterrupt:
        sup.say("\nStopping the demo...")
        return 0
    except StartupError as exc:
        sup.say(f"\nThe demo could not start:\n{exc}")
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.stop_all()
        sup.say("Demo stopped.")


if __name__ == "__main__":
    sys.exit(main())
