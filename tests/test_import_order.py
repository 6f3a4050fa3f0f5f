"""Importing any public module before ``django.setup()`` either works or fails with Django's
own error (``AppRegistryNotReady``), never with a cycle or an unrelated exception.

Each module is imported in a fresh process (a fork of an interpreter that has imported
nothing of the package) with ``DJANGO_SETTINGS_MODULE`` set and the
app registry not loaded. The two lists below are the intended split: modules that define or
import models need the registry; everything else (settings, errors, the HTTP client, token
verification, the registries of providers, token states and messages, the fake server) is
importable from a settings file, a Celery ``celery.py`` or a script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "django_synerise"

#: Importable before ``django.setup()``.
IMPORTABLE = {
    "django_synerise",
    "django_synerise.adapter_loader",
    "django_synerise.api",
    "django_synerise.api.__main__",
    "django_synerise.api.parsers",
    "django_synerise.api.serializers",
    "django_synerise.api.throttling",
    "django_synerise.apps",
    "django_synerise.breaker",
    "django_synerise.bulkhead",
    "django_synerise.checks",
    "django_synerise.client",
    "django_synerise.compiled",
    "django_synerise.conf",
    "django_synerise.conversions",
    "django_synerise.crypto",
    "django_synerise.events",
    "django_synerise.expressions",
    "django_synerise.exceptions",
    "django_synerise.jws",
    "django_synerise.jws_verify",
    "django_synerise.management",
    "django_synerise.management.commands",
    "django_synerise.management.commands.synerise_fake_server",
    "django_synerise.messages",
    "django_synerise.metrics",
    "django_synerise.migration_operations",
    "django_synerise.process_state",
    "django_synerise.profile_uuid",
    "django_synerise.providers",
    "django_synerise.querysets",
    "django_synerise.ratelimit",
    "django_synerise.relaxed_commit",
    "django_synerise.schedule",
    "django_synerise.signals",
    "django_synerise.signing",
    "django_synerise.tasks",
    "django_synerise.templatetags",
    "django_synerise.testing",
    "django_synerise.testing.__main__",
    "django_synerise.testing.control",
    "django_synerise.testing.fake",
    "django_synerise.testing.faults",
    "django_synerise.testing.oauth",
    "django_synerise.testing.plugin",
    "django_synerise.testing.records",
    "django_synerise.testing.runner",
    "django_synerise.testing.tokens",
    "django_synerise.testing.tracker",
    "django_synerise.testing.wire",
    "django_synerise.throttle",
    "django_synerise.token_status",
    "django_synerise.verification",
    "django_synerise.web_sdk",
}

#: Need the app registry: they define models, import them, or import Django modules that do.
NEEDS_REGISTRY = {
    "django_synerise.adapter",
    "django_synerise.admin",
    "django_synerise.api.errors",
    "django_synerise.api.identity",
    "django_synerise.api.schema",
    "django_synerise.api.views",
    "django_synerise.authentication",
    "django_synerise.backends",
    "django_synerise.dashboard",
    "django_synerise.management.commands.synerise_connect_users",
    "django_synerise.management.commands.synerise_purge_tokens",
    "django_synerise.management.commands.synerise_refresh_tokens",
    "django_synerise.management.commands.synerise_rotate_keys",
    "django_synerise.management.commands.synerise_setup_beat",
    "django_synerise.management.commands.synerise_status",
    "django_synerise.middleware",
    "django_synerise.models",
    "django_synerise.receivers",
    "django_synerise.services",
    "django_synerise.services.activity",
    "django_synerise.services.beat",
    "django_synerise.services.connect",
    "django_synerise.services.halt",
    "django_synerise.services.identity",
    "django_synerise.services.keys",
    "django_synerise.services.login",
    "django_synerise.services.outcomes",
    "django_synerise.services.refresh",
    "django_synerise.services.sessions",
    "django_synerise.services.single_flight",
    "django_synerise.services.status",
    "django_synerise.services.take",
    "django_synerise.services.tokens",
    "django_synerise.services.tracking",
    "django_synerise.templatetags.synerise",
    "django_synerise.urls",
}

#: Run in a fresh interpreter that has imported nothing of the package: each module is then
#: imported in a forked child, so a failed import cannot hide behind an earlier one.
PROBE = """
import importlib, json, os, sys
from django.core.exceptions import AppRegistryNotReady, ImproperlyConfigured
result = {}
for name in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            outcome = "imports"
        except (AppRegistryNotReady, ImproperlyConfigured) as exc:
            outcome = type(exc).__name__
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result[name] = pipe.read()
    os.waitpid(pid, 0)
print(json.dumps(result))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_every_module_is_listed() -> None:
    assert IMPORTABLE.isdisjoint(NEEDS_REGISTRY)
    assert set(_modules()) == IMPORTABLE | NEEDS_REGISTRY


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the probe forks one child per module")
@pytest.mark.parametrize("expected", ["imports", "AppRegistryNotReady"])
def test_import_before_setup_works_or_fails_with_djangos_error(expected: str) -> None:
    names = sorted(IMPORTABLE if expected == "imports" else NEEDS_REGISTRY)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run([sys.executable, "-c", PROBE, *names], env=env, cwd=PACKAGE.parent,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    results: dict[str, str] = json.loads(done.stdout)
    assert set(results) == set(names)
    wrong = {name: outcome for name, outcome in results.items() if outcome != expected}
    assert not wrong, wrong
