"""Re-encrypt stored Synerise tokens under the primary ``TOKEN_ENCRYPTION_KEYS`` key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_synerise.exceptions import SyneriseConfigurationError

from ...services.keys import rotate_encryption_keys


class Command(BaseCommand):
    """Thin wrapper over :func:`django_synerise.services.keys.rotate_encryption_keys`."""

    help = "Re-encrypt stored Synerise client tokens under the primary encryption key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Rows per transaction (default 500)."
        )
        parser.add_argument(
            "--after-id", type=int, default=None, help="Resume after this token id."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would change; write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            report = rotate_encryption_keys(
                batch_size=options["batch_size"],
                dry_run=options["dry_run"],
                after_id=options["after_id"],
            )
        except SyneriseConfigurationError as exc:
            raise CommandError(str(exc)) from None
        prefix = "[dry run] " if options["dry_run"] else ""
        self.stdout.write(
            f"{prefix}rotated={report.rotated} unchanged={report.unchanged} "
            f"failed={report.failed} batches={report.batches} last_id={report.last_id}"
        )
        if report.failed:
            self.stderr.write(
                f"{report.failed} token(s) could not be decrypted with the configured keys"
                + ("" if options["dry_run"] else "; live ones were moved to needs_login")
                + "."
            )
