"""Build the sdist and wheel, check their contents, and install the wheel as a new user would:
into fresh venvs with no extra, with each documented extra alone, then a project configured
as the README says, its checks, and a real Celery worker on Redis running a refresh."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docs_snippets import apply_file_block, readme_quickstart
from tests.fresh_install import ROOT, Server, clean_env, copy_source, run

PACKAGE = ROOT / "django_synerise"

pytestmark = pytest.mark.slow

#: Modules that need an optional extra (or a test runner) to import; everything else in the
#: package must import in a venv that has only the wheel's core dependencies.
NEEDS_EXTRA = {
    "django_synerise.tasks": "celery",
    "django_synerise.api.schema": "openapi",
    "django_synerise.testing.plugin": "pytest",
}
#: The documented extras; each must work installed alone.
EXTRAS = ("celery", "openapi", "prometheus")


def package_files() -> set[str]:
    """Every file of the package in the source tree, as ``django_synerise/...`` paths."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``python -m build`` (sdist, then the wheel built from that sdist) of a copy of the tree."""
    base = tmp_path_factory.mktemp("packaging")
    source = copy_source(base / "src")
    outdir = base / "dist"
    run([sys.executable, "-m", "build", "--outdir", outdir, source], cwd=base, env=clean_env())
    wheels = sorted(outdir.glob("*.whl"))
    sdists = sorted(outdir.glob("*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def venv_with(
    dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str | None], Path]:
    """``venv_with(extra)``: a new venv holding the wheel installed with only that extra
    (``None``: none), from the package index like a user's; made once per module. Returns
    its bin/."""
    made: dict[str | None, Path] = {}

    def make(extra: str | None) -> Path:
        if extra not in made:
            venv = tmp_path_factory.mktemp(f"venv-{extra or 'base'}")
            # Without a pip of its own (ensurepip costs seconds a venv): this run's pip
            # installs into it, from the package index like any install.
            run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv, env=clean_env())
            requirement = f"{dists['wheel']}[{extra}]" if extra else str(dists["wheel"])
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    venv / "bin" / "python",
                    "install",
                    requirement,
                ],
                cwd=venv,
                env=clean_env(),
            )
            made[extra] = venv / "bin"
        return made[extra]

    return make


@pytest.fixture(scope="module")
def fresh_venv(venv_with: Callable[[str | None], Path]) -> Path:
    """The venv of the wheel without any extra. Returns its bin/."""
    return venv_with(None)


def readme_project(bindir: Path, base: Path, *, celery_app: bool) -> tuple[Path, dict[str, str]]:
    """``django-admin startproject mysite`` in ``bindir``'s venv, with the development blocks
    of the README applied (the Celery app only with ``celery_app``); returns the project
    directory and the environment to run it in (settings from the README's defaults)."""
    development, _ = readme_quickstart()
    env = clean_env(PATH=f"{bindir}:{clean_env()['PATH']}", VIRTUAL_ENV=str(bindir.parent))
    run([bindir / "django-admin", "startproject", "mysite"], cwd=base, env=env)
    project = base / "mysite"
    applied = []
    for block in development:
        if block.lang != "python":
            continue
        header = block.code.splitlines()[0]
        if not celery_app and ("celery.py" in header or "from .celery import" in block.code):
            continue
        applied.append(apply_file_block(project, block.code).name)
    assert applied[:2] == ["settings.py", "urls.py"], applied
    if celery_app:
        assert applied[2:] == ["celery.py", "__init__.py"], applied
    return project, {**env, "PYTHONPATH": str(project), "DJANGO_SETTINGS_MODULE": "mysite.settings"}


@pytest.fixture(scope="module")
def documented_project(
    fresh_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """The README's project in the venv without extras, minus its Celery app (which needs the
    extra): the cron set-up."""
    return readme_project(fresh_venv, tmp_path_factory.mktemp("project"), celery_app=False)


@pytest.fixture(scope="module")
def celery_project(
    venv_with: Callable[[str | None], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """The README's project, Celery app included, in the venv of the documented install
    (``[celery]``)."""
    bindir = venv_with("celery")
    return readme_project(bindir, tmp_path_factory.mktemp("celery-project"), celery_app=True)


def test_wheel_contains_every_package_file(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
    package = {name for name in names if name.startswith("django_synerise/")}
    expected = package_files()
    assert expected - package == set(), "files of the package missing from the wheel"
    assert package - expected == set(), "wheel holds files that are not in the package"
    for required in (
        "django_synerise/py.typed",
        "django_synerise/migrations/__init__.py",
        "django_synerise/migrations/0001_initial.py",
        "django_synerise/services/__init__.py",
        "django_synerise/api/views.py",
        "django_synerise/testing/fake.py",
        "django_synerise/management/commands/synerise_refresh_tokens.py",
    ):
        assert required in names
    data_dirs = ("templates", "static", "locale")
    for name in expected:
        if name.split("/")[1] in data_dirs:
            assert name in names
    # Only the package (and its dist-info) is installed: no tests/, docs/ or example project.
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"django_synerise"}


def test_wheel_metadata(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(metadata_name).decode()
        entry_points = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
        licenses = [n for n in wheel.namelist() if ".dist-info/licenses/" in n]
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "Name: django-synerise" in headers
    assert "License-Expression: MIT" in headers
    assert "Requires-Python: >=3.10" in headers
    assert "Classifier: Typing :: Typed" in headers
    assert licenses == [f"{metadata_name.split('/')[0]}/licenses/LICENSE"]
    requires = [
        h.removeprefix("Requires-Dist: ") for h in headers if h.startswith("Requires-Dist:")
    ]
    core = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("Django>=") for r in core)
    assert any(r.startswith("djangorestframework") for r in core)
    # Celery and drf-spectacular are extras, never core dependencies.
    assert not any(r.lower().startswith(("celery", "redis", "drf-spectacular")) for r in core)
    # The celery extra is Celery's own redis extra (the transport and what it imports), not
    # transports listed by hand.
    celery_extra = [r for r in requires if 'extra == "celery"' in r]
    assert [r.split(";")[0].strip() for r in celery_extra] == ["celery[redis]>=5.4"], celery_extra
    assert any(r.startswith("drf-spectacular") and 'extra == "openapi"' in r for r in requires)
    assert any(r.startswith("prometheus-client") and 'extra == "prometheus"' in r
               for r in requires)
    assert not any(r.lower().startswith("prometheus") for r in core)
    # The pytest plugin is opt-in (``pytest_plugins``), not a pytest11 entry point.
    assert entry_points == []
    # README is the long description, rendered as Markdown.
    assert "Description-Content-Type: text/markdown" in headers
    assert metadata.split("\n\n", 1)[1].strip()


def test_sdist_contains_docs_tests_license_and_changelog(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for required in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "tox.ini",
        "docs/conf.py",
        "docs/index.rst",
        "docs/installation.rst",
        "tests/settings.py",
        "tests/conftest.py",
        "tests/test_packaging.py",
        "django_synerise/py.typed",
        "django_synerise/migrations/0001_initial.py",
    ):
        assert required in names, f"{required} missing from the sdist"
    for name in (ROOT / "docs").rglob("*.rst"):
        assert name.relative_to(ROOT).as_posix() in names
    assert package_files() <= names
    # Nothing generated or local leaks into the sdist.
    leaked = [
        n
        for n in names
        if "__pycache__" in n
        or n.endswith((".pyc", ".sqlite3"))
        or n.startswith(("docs/_build/", "example_project/var/", ".venv/", ".git/"))
    ]
    assert leaked == []


def test_twine_check_passes(dists: dict[str, Path]) -> None:
    output = run(
        [sys.executable, "-m", "twine", "check", "--strict", dists["wheel"], dists["sdist"]],
        cwd=dists["wheel"].parent,
        env=clean_env(),
    )
    assert output.count("PASSED") == 2, output


def test_clean_venv_has_no_extras(fresh_venv: Path) -> None:
    code = (
        "import importlib.util as u\n"
        "for name in ('celery', 'drf_spectacular', 'pytest', 'redis'):\n"
        "    print(name, u.find_spec(name) is not None)\n"
    )
    output = run([fresh_venv / "python", "-c", code], cwd=fresh_venv, env=clean_env())
    found = dict(line.split() for line in output.splitlines())
    assert found == {
        "celery": "False",
        "drf_spectacular": "False",
        "pytest": "False",
        "redis": "False",
    }


def _synerise_ids(output: str) -> list[str]:
    """The django_synerise check ids reported in ``output`` (not those named in hints)."""
    return re.findall(r"\((django_synerise\.[EW]\d+)\)", output)


def test_installed_wheel_passes_django_check(
    fresh_venv: Path, documented_project: tuple[Path, dict[str, str]]
) -> None:
    project, env = documented_project
    output = run([fresh_venv / "python", "manage.py", "check"], cwd=project, env=env)
    # The README's development settings: only the derived-keys warning, which it announces.
    assert _synerise_ids(output) == ["django_synerise.W003"], output
    # The migrations shipped in the wheel apply and match the models.
    run([fresh_venv / "django-admin", "migrate", "--verbosity", "0"], cwd=project, env=env)
    output = run(
        [fresh_venv / "django-admin", "showmigrations", "django_synerise"], cwd=project, env=env
    )
    assert "[X] 0001_initial" in output
    run(
        [fresh_venv / "django-admin", "makemigrations", "--check", "--dry-run", "django_synerise"],
        cwd=project,
        env=env,
    )
    # The management commands of the package are found in the installed wheel.
    output = run([fresh_venv / "django-admin", "help", "--commands"], cwd=project, env=env)
    for command in ("synerise_refresh_tokens", "synerise_rotate_keys", "synerise_fake_server"):
        assert command in output.split()


IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import django_synerise, django_synerise.client
assert "celery" not in sys.modules, "import django_synerise.client imported celery"
import django
django.setup()
celery = sorted(m for m in sys.modules if m == "celery" or m.startswith("celery."))
print("celery after setup", celery)
skip = set(filter(None, sys.argv[1].split(",")))
names = []
for info in pkgutil.walk_packages(django_synerise.__path__, "django_synerise."):
    if info.name in skip or info.name.endswith(".__main__"):
        continue
    importlib.import_module(info.name)
    names.append(info.name)
from django.urls import reverse
reverse("synerise:login")
print("imported", len(names))
"""


@pytest.mark.parametrize("extra", [None, *EXTRAS], ids=["no-extra", *EXTRAS])
def test_every_module_imports_with_each_extra_alone(
    extra: str | None, venv_with: Callable[[str | None], Path], tmp_path: Path
) -> None:
    """Every module imports in a venv holding the wheel with only ``extra``, except those
    needing another extra; starting Django imports no Celery."""
    bindir = venv_with(extra)
    project, env = readme_project(bindir, tmp_path, celery_app=False)
    skip = sorted(name for name, needs in NEEDS_EXTRA.items() if needs != extra)
    output = run([bindir / "python", "-c", IMPORT_EVERYTHING, ",".join(skip)], cwd=project, env=env)
    assert "celery after setup []" in output.splitlines(), output
    imported = int(re.search(r"^imported (\d+)$", output, re.M).group(1))
    modules = [n for n in package_files() if n.endswith(".py") and not n.endswith("__main__.py")]
    # walk_packages yields every module but the root package itself (already imported).
    assert imported == len(modules) - 1 - len(skip)
    if extra == "celery":
        # Both documented brokers: Redis (kombu's transport needs the redis extra's packages)
        # and RabbitMQ (py-amqp, a dependency of Celery itself).
        run(
            [bindir / "python", "-c", "import kombu.transport.redis, kombu.transport.pyamqp"],
            cwd=project,
            env=env,
        )


def test_without_the_extra_the_tasks_module_fails_loudly(
    fresh_venv: Path, documented_project: tuple[Path, dict[str, str]]
) -> None:
    project, env = documented_project
    proc = subprocess.run(
        [
            fresh_venv / "python",
            "-c",
            "import django\ndjango.setup()\nimport django_synerise.tasks",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "No module named 'celery'" in proc.stderr


def test_starting_django_never_imports_celery_even_when_installed(
    documented_project: tuple[Path, dict[str, str]],
) -> None:
    """Here Celery *is* installed (test dependency group), so only a stray import loads it."""
    assert importlib.util.find_spec("celery") is not None, "install the test dependency group"
    project, env = documented_project
    env = {key: value for key, value in env.items() if key != "VIRTUAL_ENV"}
    output = run(
        [sys.executable, "-c", IMPORT_EVERYTHING, ",".join(NEEDS_EXTRA)], cwd=project, env=env
    )
    assert "celery after setup []" in output.splitlines(), output


TOKEN_STATE = (
    "from django_synerise.models import ClientToken\n"
    "print('state', *ClientToken.objects.values_list('status', 'version').get())\n"
)


@pytest.mark.celery
@pytest.mark.timing
def test_documented_install_refreshes_a_token_on_a_redis_worker(
    venv_with: Callable[[str | None], Path],
    celery_project: tuple[Path, dict[str, str]],
    broker_url: str,
    fake_synerise,
) -> None:
    """``pip install "django-synerise[celery]"`` and the README's project: a real worker on
    Redis (the README's ``celery -A mysite worker``) runs the beat task, which refreshes a
    due token through the fake over HTTP."""
    bindir = venv_with("celery")
    project, env = celery_project
    env = {
        **env,
        "CELERY_BROKER_URL": broker_url,
        "SYNERISE_API_KEY": fake_synerise.api_key,
        "SYNERISE_BASE_URL": fake_synerise.url,
    }
    python = bindir / "python"
    fake_synerise.add_client(email="ada@example.com", password="correct-horse")
    fake_synerise.token_lifetime = 600  # shorter than REFRESH_MARGIN: due at once
    output = run([python, "manage.py", "check"], cwd=project, env=env)
    assert _synerise_ids(output) == ["django_synerise.W003"], output
    run([python, "manage.py", "migrate", "--verbosity", "0"], cwd=project, env=env)
    sign_in = (
        "from django.contrib.auth import authenticate\n"
        "assert authenticate(None, email='ada@example.com', password='correct-horse')\n"
    )
    run([python, "manage.py", "shell", "-c", sign_in + TOKEN_STATE], cwd=project, env=env)

    worker = Server(
        [str(bindir / "celery"), "-A", "mysite", "worker", "--loglevel", "INFO", "-c", "1"],
        cwd=project,
        env=env,
        log=project / "worker.log",
    )
    try:
        worker.wait_until(lambda: " ready." in worker.output(), timeout=90, what="'ready.'")
        run(
            [
                bindir / "celery",
                "-A",
                "mysite",
                "call",
                "django_synerise.tasks.refresh_expiring_tokens",
            ],
            cwd=project,
            env=env,
        )
        worker.wait_until(
            lambda: re.search(r"refresh_tokens\[[\w-]+\] succeeded", worker.output()),
            timeout=90,
            what="refresh_tokens success",
        )
    finally:
        worker.stop()
    assert fake_synerise.count("refresh/client") == 1
    output = run([python, "manage.py", "shell", "-c", TOKEN_STATE], cwd=project, env=env)
    assert "state active 2" in output.splitlines(), output


METRICS_PROBE = """
import sys
from django_synerise import metrics
metrics.observe_login("logged_in")
metrics.observe_refresh_outcomes({"refreshed": 2})
metrics.observe_upstream("/sauth/v3/auth/refresh/client", 0.01)
print("available", metrics.available())
print("imported", "prometheus_client" in sys.modules)
if metrics.available():
    import prometheus_client
    text = prometheus_client.generate_latest().decode()
    print("exposed", 'synerise_refresh_outcomes_total{outcome="refreshed"} 2.0' in text)
"""


@pytest.mark.parametrize("extra", [None, "prometheus"], ids=["no-extra", "prometheus"])
def test_metrics_record_with_the_extra_and_do_nothing_without_it(
    extra: str | None, venv_with: Callable[[str | None], Path], tmp_path: Path
) -> None:
    bindir = venv_with(extra)
    output = run([bindir / "python", "-c", METRICS_PROBE], cwd=tmp_path, env=clean_env())
    found = dict(line.split() for line in output.splitlines())
    if extra is None:
        assert found == {"available": "False", "imported": "False"}, output
    else:
        assert found == {"available": "True", "imported": "True", "exposed": "True"}, output
