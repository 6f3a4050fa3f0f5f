"""Fault rules for FakeSynerise: which requests misbehave, and how."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULT_KINDS", "FaultRule", "FaultSet"]

#: Fault kinds ``FakeSynerise.inject(fault=...)`` accepts (besides ``status=...``).
FAULT_KINDS = frozenset(
    {
        "status",  # answer with ``status`` (+ optional Retry-After / body / headers)
        "reset",  # headers and half the body, then a TCP RST (SO_LINGER 0 + close)
        "garbage",  # 200, Content-Type JSON, body of random non-JSON bytes
        "truncated",  # 200, Content-Length larger than the bytes sent, then close
        "slow_body",  # 200, valid JSON body trickled 1 byte every ``delay`` seconds
        "latency",  # sleep ``delay`` seconds, then answer normally
        "html",  # 200 with an HTML page
        "empty",  # 200 with an empty body
        "redirect",  # 302 to another host
        "bad_json_shape",  # 200 JSON without a token
    }
)


@dataclass
class FaultRule:
    """One injected fault.

    ``path`` matches as a substring of the request path (``None`` matches every path);
    ``method`` (e.g. ``"POST"``) optionally narrows it. ``times`` is how many requests the rule
    still applies to (``None`` = until ``reset_faults()``).
    """

    fault: str = "status"
    status: int = 503
    times: int | None = 1
    path: str | None = None
    method: str | None = None
    retry_after: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 1.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Return True when this rule applies to a request (ignores the remaining count)."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or self.path in path

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly description (used by the control API)."""
        return {
            "fault": self.fault,
            "status": self.status,
            "times": self.times,
            "path": self.path,
            "method": self.method,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "hits": self.hits,
        }


class FaultSet:
    """A thread-safe, ordered list of fault rules; the first matching rule wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> FaultRule:
        """Append ``rule``; raises ValueError for an unknown fault kind or bad values."""
        if rule.fault not in FAULT_KINDS:
            raise ValueError(f"Unknown fault {rule.fault!r}; expected one of {sorted(FAULT_KINDS)}")
        if rule.times is not None and rule.times < 1:
            raise ValueError("times must be >= 1 or None")
        if rule.delay < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            self._rules.append(rule)
        return rule

    def take(self, method: str, path: str) -> FaultRule | None:
        """Return the first rule matching the request and consume one of its uses, or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        """Return a snapshot of the active rules."""
        with self._lock:
            return list(self._rules)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)
