"""``manage.py synerise_status``: circuit breaker states and stored-token counts per status."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_synerise.services.status import breaker_states, probe_upstream, token_status_counts


class Command(BaseCommand):
    """Thin wrapper over :mod:`django_synerise.services.status`.

    Exit status 0 always; ``--fail-on-open`` exits 1 when a breaker of this process is open
    (useful after ``--probe`` in a health check).
    """

    help = (
        "Print the Synerise circuit breaker state of this process (per upstream) and how many "
        "stored client tokens are in each status."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--probe",
            action="store_true",
            help="First make one GET /v4/public.pem through the breaker (shows live health).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        parser.add_argument(
            "--fail-on-open",
            action="store_true",
            help="Exit with status 1 when a breaker is open.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        probe = probe_upstream() if options["probe"] else None
        breakers = breaker_states()
        tokens = token_status_counts()
        if options["json"]:
            self.stdout.write(
                json.dumps({"breakers": breakers, "tokens": tokens, "probe": probe}, sort_keys=True)
            )
        else:
            if probe is not None:
                verdict = "ok" if probe["ok"] else f"failed ({probe['error']})"
                self.stdout.write(f"probe: {verdict}")
            for item in breakers:
                line = (
                    f"breaker {item['name']}: {item['state']} "
                    f"(failures {item['failure_count']}/{item['threshold']}, "
                    f"opened {item['total_opens']} times)"
                )
                if item["retry_in"] is not None:
                    line += f", next probe in {item['retry_in']:.0f} s"
                self.stdout.write(line)
            self.stdout.write(
                "tokens: "
                + " ".join(
                    f"{key}={tokens[key]}"
                    for key in (
                        "active",
                        "refreshing",
                        "needs_login",
                        "revoked",
                        "total",
                        "due",
                        "expired_active",
                    )
                )
            )
        if options["fail_on_open"] and any(b["state"] == "open" for b in breakers):
            raise SystemExit(1)
