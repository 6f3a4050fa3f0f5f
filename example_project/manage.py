#!/usr/bin/env python
"""Django's command-line utility for the example site."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    """Run a Django management command with the example settings."""
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    # Running from a source checkout without installing: make django_synerise importable.
    sys.path.append(str(here.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
