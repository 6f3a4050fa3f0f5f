"""``manage.py synerise_connect_users``: connect existing site users to Synerise through this
site's OAUTH identity provider (provisioning; twin of the ``connect_users`` Celery task)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_synerise.exceptions import SyneriseConfigurationError
from django_synerise.services.connect import ConnectReport, connect_users


class Command(BaseCommand):
    """Connect active users batch by batch, concurrently, within ``REFRESH_RATE_LIMIT``.

    Each answer is stored as it arrives, so a run that is stopped can be run again with
    ``--only-missing`` to carry on where it stopped. Prints a progress line per batch and the
    final counts; inactive users are never selected.
    """

    help = (
        "Sign existing site users into Synerise with identityProvider OAUTH and store their "
        "client tokens. Use --only-missing to resume or to connect only new users."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--only-missing",
            action="store_true",
            help="Only users with no stored token or a token that needs a new login.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Users per batch (default: SYNERISE['REFRESH_BATCH_SIZE']).",
        )
        parser.add_argument(
            "--limit", type=int, default=None, help="Connect at most this many users."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only print how many users would be connected; call nobody.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for option in ("limit", "batch_size"):
            if options[option] is not None and options[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1.")
        started = time.monotonic()

        def progress(report: ConnectReport) -> None:
            self.stdout.write(
                f"progress: {report.selected} users, {len(report.connected)} connected, "
                f"{len(report.retry)} will retry, {len(report.failed)} failed "
                f"({time.monotonic() - started:.1f} s)"
            )
            self.stdout.flush()

        try:
            report = connect_users(
                only_missing=options["only_missing"],
                batch_size=options["batch_size"],
                limit=options["limit"],
                dry_run=options["dry_run"],
                progress=progress,
            )
        except SyneriseConfigurationError as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            self.stdout.write(f"{report.selected} users would be connected")
            return
        self.stdout.write(
            f"selected={report.selected} connected={len(report.connected)} "
            f"retry={len(report.retry)} failed={len(report.failed)} "
            f"skipped={len(report.skipped)}"
        )
