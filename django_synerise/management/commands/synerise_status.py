"""``manage.py synerise_status``: circuit breaker states, whether background refresh is
halted, stored-token counts per status and tokens refused per reason."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_synerise.services.outcomes import last_run, refresh_work
from django_synerise.services.status import (
    breaker_states,
    probe_upstream,
    refresh_halt_state,
    refusal_counts,
    token_status_counts,
)


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
        halt = refresh_halt_state()
        refused = refusal_counts()
        work = refresh_work()
        ran = last_run()
        if options["json"]:
            payload = {
                "breakers": breakers,
                "tokens": tokens,
                "probe": probe,
                "halt": halt,
                "refused": refused,
                "last_run": ran.isoformat() if ran else None,
                "work": None if work is None else {**work, "hour": work["hour"].isoformat()},
            }
            self.stdout.write(json.dumps(payload, sort_keys=True))
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
            if halt is None:
                self.stdout.write("refresh: running")
            else:
                self.stdout.write(
                    f"refresh: halted ({halt['reason']}, {halt['detail']}) since {halt['since']}, "
                    f"{halt['probes']} rejected probes, next probe at {halt['probe_at']}"
                )
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
            self.stdout.write(
                "refused: " + " ".join(f"{key}={value}" for key, value in refused.items())
            )
            self.stdout.write(_work_line(work, ran))
        if options["fail_on_open"] and any(b["state"] == "open" for b in breakers):
            raise SystemExit(1)


def _work_line(work: dict[str, Any] | None, ran: Any) -> str:
    """``refresh work ...``: the latest hour's batches, their rate and CPU per token."""
    last = f"last run {ran.isoformat(timespec='seconds')}" if ran else "no run recorded"
    if work is None:
        return f"refresh work: no batch in the last 48 hours ({last})"

    def figure(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    return (
        f"refresh work (hour from {work['hour']:%Y-%m-%d %H:%M} UTC): "
        f"batches={work['batches']} refreshed={work['refreshed']} "
        f"tokens_per_s={figure(work['tokens_per_second'], 1)} "
        f"cpu_ms_per_token={figure(work['cpu_ms_per_token'], 2)} ({last})"
    )
