"""Sphinx configuration for the django-synerise docs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
# Autodoc imports the package; the docs never touch a database, so SQLite settings will do.
os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

with (ROOT / "pyproject.toml").open("rb") as fh:
    _project = tomllib.load(fh)["project"]

project = "django-synerise"
author = "django-synerise contributors"
copyright = "2026, django-synerise contributors"  # noqa: A001
release = _project["version"]
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

html_theme = "furo"
html_title = f"django-synerise {release}"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
