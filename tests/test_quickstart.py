"""Follow the documented quickstart literally in a fresh ``startproject`` project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.docs_snippets import apply_to_existing, installation_blocks

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
