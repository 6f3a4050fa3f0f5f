"""Follow the documented quickstarts literally in a fresh ``startproject`` project: the
README's, line by line from a new venv to a token, and the one of ``docs/installation.rst``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.fernet import Fernet

from tests.docs_snippets import (
    Block,
    apply_file_block,
    apply_to_existing,
    installation_blocks,
    readme_quickstart,
)
from tests.fresh_install import (
    Server,
    clean_env,
    copy_source,
    free_port,
    port_open,
    with_venv,
)
from tests.fresh_install import run as run_checked

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_documented_quickstart_signs_a_user_in(tmp_path, fake_synerise):
    settings_block, urls_block = installation_blocks()

    env = {
        **os.environ,
        "SYNERISE_API_KEY": fake_synerise.api_key,
        "SYNERISE_BASE_URL": fake_synerise.url,
        "SYNERISE_TOKEN_KEYS": Fernet.generate_key().decode(),
        "PYTHONPATH": str(tmp_path / "mysite"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)

    run([sys.executable, "-m", "django", "startproject", "mysite"], tmp_path, env)
    project = tmp_path / "mysite"
    settings_py = project / "mysite" / "settings.py"
    settings_py.write_text(
        "import os\n" + settings_py.read_text() + "\n" + apply_to_existing(settings_block)
    )
    urls_py = project / "mysite" / "urls.py"
    urls_py.write_text(urls_py.read_text() + "\n" + apply_to_existing(urls_block))

    env["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
    run([sys.executable, "manage.py", "check"], project, env)
    run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], project, env)

    fake_synerise.add_client(email="ada@example.com", password="correct horse")
    script = (
        "from django.contrib.auth import authenticate\n"
        "from django_synerise.services import get_valid_token\n"
        "user = authenticate(None, email='ada@example.com', password='correct horse')\n"
        "print('user', user.synerise_account.client_id)\n"
        "print('token', len(get_valid_token(user).split('.')))\n"
    )
    out = run([sys.executable, "manage.py", "shell", "-c", script], project, env)
    assert "token 3" in out
    assert fake_synerise.count("login/client") == 1


# -- README -------------------------------------------------------------------------------------

#: The ports the README's commands use; the test swaps each for a free port in every block.
README_FAKE_PORT, README_WEB_PORT = "8765", "8000"
#: Where the README expects the clone of this repository (relative to the new directory).
README_CHECKOUT = "path/to/django-synerise"


class ReadmeRunner:
    """Runs README blocks in order, as a user would type them: ``cd`` and ``. venv/bin/activate``
    change the shell state, servers start in the background until they are up, ``curl``'s
    answer is kept, every other line must exit 0. Unknown long-running commands fail."""

    def __init__(self, cwd: Path, env: dict[str, str], ports: dict[str, int]) -> None:
        self.cwd = cwd
        self.env = env
        self.ports = ports
        self.servers: dict[str, Server] = {}
        self.answers: list[str] = []
        self.outputs: dict[str, str] = {}
        self.timings: list[tuple[float, str]] = []

    def localize(self, code: str) -> str:
        """Swap the README's ports for this run's free ones."""
        for documented, port in self.ports.items():
            code = code.replace(documented, str(port))
        return code

    def block(self, block: Block, env: dict[str, str] | None = None) -> None:
        code = self.localize(block.code)
        if block.lang == "python":
            apply_file_block(self.cwd, code)
            return
        assert block.lang == "console", f"unexpected README block {block.lang!r}"
        for line in code.splitlines():
            if line.strip():
                started = time.monotonic()
                self.line(line.strip(), env or self.env)
                self.timings.append((time.monotonic() - started, line.strip()))

    def line(self, line: str, env: dict[str, str]) -> None:
        if line.startswith("cd "):
            self.cwd = (self.cwd / line.removeprefix("cd ")).resolve()
            assert self.cwd.is_dir(), line
        elif line.startswith((". ", "source ")):
            activate = self.cwd / line.split(maxsplit=1)[1]
            assert activate.name == "activate", line
            self.env = with_venv(self.env, activate.parent.parent)
        elif "synerise_fake_server" in line:
            server = self.serve("fake", line, env)
            server.wait_until(lambda: "listening on" in server.output(), timeout=60, what="URL")
        elif " runserver" in line:
            port = self.ports[README_WEB_PORT]
            server = self.serve("web", line, env)
            server.wait_until(lambda: port_open(port), timeout=60, what="open port")
        elif line.startswith("celery ") and " worker" in line:
            server = self.serve("worker", line, env)
            server.wait_until(lambda: " ready." in server.output(), timeout=90, what="'ready.'")
        elif line.startswith("curl "):
            self.answers.append(run_checked(line, cwd=self.cwd, env=env, timeout=60))
        else:
            self.outputs[line] = run_checked(line, cwd=self.cwd, env=env, timeout=600)

    def serve(self, name: str, line: str, env: dict[str, str]) -> Server:
        assert name not in self.servers, f"the README starts a second {name}: {line}"
        server = Server(line, cwd=self.cwd, env=env, log=self.cwd / f"{name}.log")
        self.servers[name] = server
        return server

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.mark.slow
@pytest.mark.celery
@pytest.mark.timing
def test_readme_quickstart_reaches_a_token(tmp_path, broker_url):
    """Every code block of the README's Quickstart, in order, in a new directory holding only
    a copy of this checkout: venv, install, startproject, settings, Celery app, migrate, fake,
    runserver, worker, and a token from ``curl``; then "Going to production"."""
    development, production = readme_quickstart()
    documented = "".join(block.code for block in development)
    assert README_FAKE_PORT in documented and README_WEB_PORT in documented
    assert README_CHECKOUT in documented
    copy_source(tmp_path / README_CHECKOUT)
    ports = {README_FAKE_PORT: free_port(), README_WEB_PORT: free_port()}
    readme = ReadmeRunner(tmp_path, clean_env(CELERY_BROKER_URL=broker_url), ports)
    try:
        for block in development:
            readme.block(block)
        _check_development_site(readme)
        for block in production:
            readme.block(block, env=_production_env(readme))
    finally:
        readme.stop()
        # A beat tick that fired before the worker stopped must not reach a later test's worker.
        if "worker" in readme.servers:
            subprocess.run(
                ["celery", "-A", "mysite", "purge", "-f"],
                cwd=readme.cwd,
                env=readme.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        print("\n".join(f"{seconds:6.1f} s  {line}" for seconds, line in readme.timings))

    # The production settings pass the deployment checks of django-synerise (Django's own
    # findings about a startproject site, DEBUG and SECRET_KEY, are warnings).
    assert readme.timings[-1][1] == "python manage.py check --deploy"
    assert "django_synerise." not in readme.outputs["python manage.py check --deploy"]


def _check_development_site(readme: ReadmeRunner) -> None:
    """The token curl got is the fake's, the worker runs the refresh task, and the
    development settings are refused by ``check --deploy``."""
    assert len(readme.answers) == 1, readme.answers
    body = json.loads(readme.answers[0])
    assert set(body) >= {"token", "expires_at", "client_id", "user_id"}, body
    fake_url = f"http://127.0.0.1:{readme.ports[README_FAKE_PORT]}"
    public_key = requests.get(f"{fake_url}/v4/public.pem", timeout=10).text
    claims = jwt.decode(body["token"], public_key, algorithms=["RS512"])
    assert str(claims["clId"]) == body["client_id"]
    assert claims["eml"] == "ada@example.com"

    worker = readme.servers["worker"]
    for task in ("refresh_expiring_tokens", "refresh_tokens", "purge_tokens"):
        assert f"django_synerise.tasks.{task}" in worker.output()
    out = run_checked(
        'python -c "from mysite.celery import app; print(sorted(app.conf.beat_schedule))"',
        cwd=readme.cwd,
        env=readme.env,
    )
    assert "django-synerise-refresh-expiring-tokens" in out
    run_checked(
        "celery -A mysite call django_synerise.tasks.refresh_expiring_tokens",
        cwd=readme.cwd,
        env=readme.env,
    )
    worker.wait_until(
        lambda: re.search(r"refresh_expiring_tokens\[[\w-]+\] succeeded", worker.output()),
        timeout=60,
        what="refresh_expiring_tokens success",
    )

    proc = subprocess.run(
        ["python", "manage.py", "check", "--deploy"],
        cwd=readme.cwd,
        env=readme.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "django_synerise.E037" in proc.stderr and "django_synerise.E038" in proc.stderr


def _production_env(readme: ReadmeRunner) -> dict[str, str]:
    keys = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    return {**readme.env, "SYNERISE_API_KEY": "production-profile-key", "SYNERISE_TOKEN_KEYS": keys}
