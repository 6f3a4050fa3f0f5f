"""``manage.py synerise_refresh_tokens``: refresh due Synerise tokens in-process (cron twin
of the Celery beat task)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_synerise.services.refresh import count_due_tokens, refresh_due_tokens


class Command(BaseCommand):
    """Claim and refresh due tokens until none is due, then print the counts.

    Safe to run from cron while Celery workers run too: every claim is decided by the
    database (skip-locked rows and leases), so no token is refreshed twice.
    """

    help = (
        "Refresh the Synerise client tokens that are due (same service as the Celery beat "
        "task, without Celery). Prints how many were refreshed, failed or need a new login."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only print how many tokens are due; claim and refresh nothing.",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="Refresh at most this many tokens in this run (default: all that are due).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Tokens per batch (default: SYNERISE['REFRESH_BATCH_SIZE']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dry_run"]:
            self.stdout.write(f"{count_due_tokens()} tokens due")
            return
        for option in ("limit", "batch_size"):
            if options[option] is not None and options[option] < 1:
                raise CommandError(f"--{option.replace('_', '-')} must be at least 1.")
        report = refresh_due_tokens(limit=options["limit"], batch_size=options["batch_size"])
        rate, cpu = report.tokens_per_second, report.cpu_ms_per_token
        self.stdout.write(
            f"claimed={report.claimed} refreshed={report.refreshed} "
            f"failed={report.failed} needs_login={report.needs_login} "
            f"skipped={report.skipped} seconds={report.seconds:.3f} "
            f"tokens_per_s={'n/a' if rate is None else f'{rate:.1f}'} "
            f"cpu_ms_per_token={'n/a' if cpu is None else f'{cpu:.2f}'}"
        )
