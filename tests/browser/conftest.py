"""Fixtures of the browser tests: the real example site (scripts/demo.py) and headless Chromium.

The ``demo_site`` fixture starts ``scripts/demo.py`` once per session on free ports with a
temporary database, 80-second FakeSynerise tokens and a one-second beat, so a background refresh
happens within seconds. Chromium is Debian's (``apt-get install chromium``), driven by the
``playwright`` package; ``playwright install`` is never needed.

Without Chromium (or Playwright) the browser tests do not run: they are replaced by one failing
item whose single line says how to install what is missing, so ``make test`` runs everything
else and still fails, on a developer's machine and in CI alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "_static" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN_LIFETIME = 80
ADMIN = ("admin", "browser-admin-pw")
CLIENT_PASSWORD = "browser-demo-pw"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the example site in headless Chromium")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (one line with the fix), or None if they can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: run `make install` (or pip install playwright)."
    if not Path(CHROMIUM).is_file() or not os.access(CHROMIUM, os.X_OK):
        return (
            f"Chromium not found at {CHROMIUM}: install Debian's chromium "
            "(sudo apt-get install chromium) or set CHROMIUM_PATH to a Chromium binary."
        )
    return None


class MissingBrowser(pytest.Item):
    """Stands for the browser tests when they cannot run: fails with :func:`missing_browser`."""

    def __init__(self, *, reason: str, count: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
        self.count = count
        self.add_marker(pytest.mark.browser)

    def runtest(self) -> None:
        pytest.fail(f"{self.reason} ({self.count} browser tests not run)", pytrace=False)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Replace the browser tests by one :class:`MissingBrowser` item when they cannot run."""
    browser_items = [item for item in items if item.get_closest_marker("browser")]
    reason = missing_browser() if browser_items else None
    if reason is None:
        return
    first = items.index(browser_items[0])
    stand_in = MissingBrowser.from_parent(
        browser_items[0].parent, name="chromium", reason=reason, count=len(browser_items)
    )
    kept = [item for item in items if item not in browser_items]
    items[:] = [*kept[:first], stand_in, *kept[first:]]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The demo runs on its embedded defaults (its own SQLite database, filesystem broker, the fake),
# whatever the test run itself was given: these never reach a demo process.
HOST_SETTINGS = (
    "SYNERISE_API_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DJANGO_SETTINGS_MODULE",
    "GOOGLE_CLIENT_ID",
    "APPLE_CLIENT_ID",
    "FACEBOOK_APP_ID",
)


def _without_host_settings(environ: Any) -> dict[str, str]:
    """Return a copy of ``environ`` without :data:`HOST_SETTINGS`."""
    return {name: value for name, value in environ.items() if name not in HOST_SETTINGS}


@dataclass
class DemoSite:
    """A running example site: its URL, its fake's URL and the demo credentials."""

    url: str
    fake_url: str
    fake_port: int
    var_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    admin: tuple[str, str] = ADMIN
    client_password: str = CLIENT_PASSWORD

    def log_tail(self, lines: int = 60) -> str:
        """Return the last ``lines`` lines the demo printed (for failure messages)."""
        return "\n".join(self.output[-lines:])


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """Run ``scripts/demo.py`` on free ports until the session ends, then Ctrl-C it."""
    port, fake_port = _free_port(), _free_port()
    var_dir = tmp_path_factory.mktemp("demo-var")
    env = _without_host_settings(os.environ)
    env.update(
        DEMO_ADMIN_PASSWORD=ADMIN[1], DEMO_CLIENT_PASSWORD=CLIENT_PASSWORD, PYTHONUNBUFFERED="1"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--port",
            str(port),
            "--fake-port",
            str(fake_port),
            "--var-dir",
            str(var_dir),
            "--token-lifetime",
            str(TOKEN_LIFETIME),
            "--beat-interval",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    site = DemoSite(
        url=f"http://127.0.0.1:{port}",
        fake_url=f"http://127.0.0.1:{fake_port}",
        fake_port=fake_port,
        var_dir=var_dir,
        process=process,
    )
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            site.output.append(line.rstrip())
            if line.startswith("DEMO READY"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    _running_demos.append(site)
    deadline = time.monotonic() + 180
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"scripts/demo.py did not start:\n{site.log_tail()}")
    try:
        yield site
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# The demo of this session, so that a failed test's report can show what it printed.
_running_demos: list[DemoSite] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Add the demo's last lines (and whether it still runs) to a failed test's report."""
    report = yield
    if report.failed and _running_demos:
        site = _running_demos[-1]
        state = "running" if site.process.poll() is None else f"exited {site.process.returncode}"
        if report.longrepr is not None and hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection(f"demo output ({state})", site.log_tail(120))
    return report


def _demo_script() -> Any:
    """Import scripts/demo.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sdk_site(demo_site: DemoSite) -> Iterator[str]:
    """A second runserver of the same site (same database and fake) with provider client ids
    set, so the login page shows the Google and Facebook SDK buttons; yields its URL."""
    demo = _demo_script()
    port = _free_port()
    args = argparse.Namespace(
        var_dir=demo_site.var_dir,
        beat_interval=1.0,
        fake_port=demo_site.fake_port,
        token_lifetime=TOKEN_LIFETIME,
    )
    # Same database and fake as demo_site: never the DATABASE_URL the test run was given.
    env = demo.child_env(args, use_fake=True, environ=_without_host_settings(os.environ))
    env.update(
        GOOGLE_CLIENT_ID="test-client.apps.googleusercontent.com", FACEBOOK_APP_ID="1234567890"
    )
    log = (demo_site.var_dir / "sdk-site.log").open("w")  # read it when an SDK test fails
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "example_project" / "manage.py"),
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
            "--skip-checks",
        ],
        cwd=ROOT / "example_project",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        demo.wait_for_http(f"{url}/login/", 30, process, "runserver")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (the tests that use it are replaced by
    one failing item when either is missing, see :func:`pytest_collection_modifyitems`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, demo_site: DemoSite) -> Iterator[Any]:
    """A fresh browser context (own cookies) with one page; 1280x800 for screenshots."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=demo_site.url)
    context.set_default_timeout(30_000)  # generous: the machine may be loaded
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``docs/_static/screenshots/`` (shown in the docs) when
    ``UPDATE_SCREENSHOTS=1`` is set, else a temporary directory, so a test run never changes
    tracked files."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")
