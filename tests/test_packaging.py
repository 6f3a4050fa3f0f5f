"""Build the sdist and wheel, check their contents, and install the wheel into a clean venv."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.docs_snippets import apply_to_existing, installation_blocks

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_synerise"

pytestmark = pytest.mark.slow

#: Modules that need an optional extra (or a test runner) to import; everything else in the
#: package must import in a venv that has only the wheel's core dependencies.
NEEDS_EXTRA = {
    "django_synerise.tasks": "celery",
    "django_synerise.api.schema": "openapi",
    "django_synerise.testing.plugin": "pytest",
}

#: Files of the source tree never copied into the build directory.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".tox",
    "__pycache__",
    "*.py[cod]",
    "*.egg-info",
    "build",
    "dist",
    "_build",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "var",
    "*.sqlite3",
)


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output unless it exits 0. Returns stdout + stderr."""
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{output}"
    return output


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without anything that points Python at this checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL"}
    }
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def copy_source(dest: Path) -> Path:
    """Copy the project as a fresh checkout would have it (tracked + new, not ignored files)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
        return dest
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


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
def fresh_venv(dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding only the wheel and its core dependencies (no extras). Returns bin/."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", venv], cwd=venv, env=clean_env())
    bindir = venv / "bin"
    run([bindir / "python", "-m", "pip", "install", dists["wheel"]], cwd=venv, env=clean_env())
    return bindir


@pytest.fixture(scope="module")
def documented_project(
    fresh_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """``django-admin startproject`` in the clean venv plus the settings and URLs of the docs."""
    settings_block, urls_block = installation_blocks()
    for documented in (
        '"rest_framework"',
        '"django_synerise"',
        "SyneriseBackend",
        "API_KEY",
        "BASE_URL",
        "TOKEN_ENCRYPTION_KEYS",
    ):
        assert documented in settings_block

    base = tmp_path_factory.mktemp("project")
    run([fresh_venv / "django-admin", "startproject", "mysite"], cwd=base, env=clean_env())
    project = base / "mysite"
    settings_py = project / "mysite" / "settings.py"
    settings_py.write_text(
        "import os\n" + settings_py.read_text() + "\n" + apply_to_existing(settings_block)
    )
    urls_py = project / "mysite" / "urls.py"
    urls_py.write_text(urls_py.read_text() + "\n" + apply_to_existing(urls_block))
    env = clean_env(
        DJANGO_SETTINGS_MODULE="mysite.settings",
        PYTHONPATH=str(project),
        SYNERISE_API_KEY="test-profile-api-key",
        SYNERISE_TOKEN_KEYS=f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
    )
    return project, env


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
    assert any(r.startswith("celery") and 'extra == "celery"' in r for r in requires)
    assert any(r.startswith("drf-spectacular") and 'extra == "openapi"' in r for r in requires)
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


def test_installed_wheel_passes_django_check(
    fresh_venv: Path, documented_project: tuple[Path, dict[str, str]]
) -> None:
    project, env = documented_project
    output = run([fresh_venv / "django-admin", "check"], cwd=project, env=env)
    assert "System check identified no issues" in output
    # The deployment checks of the package itself stay quiet with the documented settings.
    # Django's own findings about a startproject site (DEBUG, SECRET_KEY, and from Django 6.1
    # the console mail backend) are expected here, so only our ids are asserted on.
    output = run(
        [fresh_venv / "django-admin", "check", "--deploy", "--fail-level", "CRITICAL"],
        cwd=project,
        env=env,
    )
    assert "django_synerise." not in output, output
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
skip = set(sys.argv[1].split(","))
names = []
for info in pkgutil.walk_packages(django_synerise.__path__, "django_synerise."):
    if info.name in skip or info.name.endswith(".__main__"):
        continue
    importlib.import_module(info.name)
    names.append(info.name)
from django.urls import reverse
reverse("synerise:login")
celery = sorted(m for m in sys.modules if m == "celery" or m.startswith("celery."))
print("imported", len(names))
print("celery", celery)
"""


def test_installed_wheel_imports_without_celery(
    fresh_venv: Path, documented_project: tuple[Path, dict[str, str]]
) -> None:
    project, env = documented_project
    run(
        [fresh_venv / "python", "-c", "import django_synerise, django_synerise.client"],
        cwd=project,
        env=env,
    )
    output = run(
        [fresh_venv / "python", "-c", IMPORT_EVERYTHING, ",".join(NEEDS_EXTRA)],
        cwd=project,
        env=env,
    )
    assert "celery []" in output.splitlines(), output
    imported = int(re.search(r"^imported (\d+)$", output, re.M).group(1))
    modules = [n for n in package_files() if n.endswith(".py") and not n.endswith("__main__.py")]
    # walk_packages yields every module but the root package itself (already imported).
    assert imported == len(modules) - 1 - len(NEEDS_EXTRA)
    # Without the extra, the Celery tasks module fails loudly instead of half-working.
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
    assert "celery" in proc.stderr.lower()


def test_starting_django_never_imports_celery_even_when_installed(
    documented_project: tuple[Path, dict[str, str]],
) -> None:
    """Here Celery *is* installed (test dependency group), so only a stray import loads it."""
    assert importlib.util.find_spec("celery") is not None, "install the test dependency group"
    project, env = documented_project
    output = run(
        [sys.executable, "-c", IMPORT_EVERYTHING, ",".join(NEEDS_EXTRA)], cwd=project, env=env
    )
    assert "celery []" in output.splitlines(), output
