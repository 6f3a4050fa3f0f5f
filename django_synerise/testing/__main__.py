"""``python -m django_synerise.testing``: run FakeSynerise until Ctrl-C (no Django needed)."""

from __future__ import annotations

import argparse
import sys

from .runner import add_arguments, run_from_options


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and serve; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m django_synerise.testing",
        description="Run a fake Synerise client-auth API on a local port.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_from_options(vars(args))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
