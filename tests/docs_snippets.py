"""Read the code examples of the docs, so tests can apply exactly what the docs say."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(rst: str) -> list[str]:
    """Return the ``code-block:: python`` bodies of an rst document, dedented."""
    blocks = []
    lines = rst.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        directive = len(line) - len(line.lstrip())
        body = []
        for candidate in lines[index + 1 :]:
            if candidate.strip() and len(candidate) - len(candidate.lstrip()) <= directive:
                break
            body.append(candidate)
        blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def apply_to_existing(block: str) -> str:
    """Turn the docs' ``NAME = [\\n    # ...`` (meaning "what you already have") into code."""
    return re.sub(r"^(\w+) = \[\n(\s+)# \.\.\.\n", r"\1 = [\n\2*\1,\n", block, flags=re.M)


def installation_blocks() -> tuple[str, str]:
    """The settings block and the URLconf block of ``docs/installation.rst``."""
    blocks = python_blocks((DOCS / "installation.rst").read_text())
    settings_block = next(b for b in blocks if "AUTHENTICATION_BACKENDS" in b)
    urls_block = next(b for b in blocks if "urlpatterns" in b)
    return settings_block, urls_block
