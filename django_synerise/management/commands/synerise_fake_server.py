"""``manage.py synerise_fake_server``: run the bundled FakeSynerise on a port until Ctrl-C."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_synerise.testing.runner import add_arguments, run_from_options


class Command(BaseCommand):
    """Serve a fake Synerise client-auth API (development and demos only)."""

    help = "Run a fake Synerise client-auth API on a local port (for development and tests)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """Add the fake server's options (same as ``python -m django_synerise.testing``)."""
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the server and block until Ctrl-C; raises CommandError on bad options."""
        try:
            run_from_options(options, stdout=self.stdout)
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
