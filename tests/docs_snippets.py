"""Read the code examples of the docs, so tests can apply exactly what the docs say."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
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


README = DOCS.parent / "README.md"

#: First line of a README Python block: the file it belongs to and how to apply it.
FILE_HEADER = re.compile(
    r"^# (?P<path>[\w./]+): (?P<how>add at the end|a new file|in production\b.*)$"
)


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README: its language, body and the heading above it."""

    lang: str
    code: str
    heading: str


def markdown_blocks(markdown: str) -> list[Block]:
    """Return the fenced code blocks of a Markdown document, in order."""
    blocks = []
    heading = ""
    lines = iter(markdown.splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            lang = line[3:].strip()
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            blocks.append(Block(lang, "\n".join(body) + "\n", heading))
    return blocks


def readme_quickstart() -> tuple[list[Block], list[Block]]:
    """The README's Quickstart blocks: (development steps, "Going to production" steps)."""
    blocks = markdown_blocks(README.read_text())
    quickstart = [b for b in blocks if b.heading in {"Quickstart", "Going to production"}]
    development = [b for b in quickstart if b.heading == "Quickstart"]
    production = [b for b in quickstart if b.heading == "Going to production"]
    assert development and production, "README lost its Quickstart or Going to production"
    return development, production


def apply_file_block(project: Path, code: str) -> Path:
    """Apply a README Python block to ``project`` as its first line says (``# path: add at
    the end`` appends, ``# path: a new file`` writes, ``# path: in production ...`` appends,
    overriding the development values); returns the file written."""
    header = FILE_HEADER.match(code.splitlines()[0])
    assert header, f"a README Python block must start with '# <file>: <how>', not:\n{code}"
    target = project / header["path"]
    if header["how"] == "a new file":
        assert not target.exists(), f"{target} already exists"
        target.write_text(code)
    else:
        assert target.exists(), f"{target} does not exist"
        target.write_text(target.read_text() + "\n" + code)
    return target
