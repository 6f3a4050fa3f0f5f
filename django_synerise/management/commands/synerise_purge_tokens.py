"""``manage.py synerise_purge_tokens``: delete revoked and long-expired Synerise token rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import Q
from django.utils import timezone

from django_synerise.conf import synerise_settings
from django_synerise.models import ClientToken, TokenStatus
from django_synerise.services.refresh import purge_tokens


class Command(BaseCommand):
    """Purge rows revoked, or expired, for longer than ``PURGE_AFTER`` (in batches)."""

    help = (
        "Delete Synerise token rows revoked or expired for longer than "
        "SYNERISE['PURGE_AFTER'] seconds. Prints how many rows were deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only print how many rows would go."
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Rows deleted per statement."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dry_run"]:
            cutoff = timezone.now() - timedelta(seconds=synerise_settings.PURGE_AFTER)
            count = ClientToken.objects.filter(
                Q(status=TokenStatus.REVOKED, updated_at__lt=cutoff) | Q(expires_at__lt=cutoff)
            ).count()
            self.stdout.write(f"{count} token rows would be purged")
            return
        deleted = purge_tokens(batch_size=max(1, options["batch_size"]))
        self.stdout.write(f"{deleted} token rows purged")
