"""Prometheus metrics of the token fleet and the refresh pipeline (the ``[prometheus]`` extra).

Nothing here imports ``prometheus_client`` until a metric is first recorded or exposed, and
every ``observe_*`` function does nothing when the library is missing: without the extra,
nothing is imported and nothing breaks.

Two kinds of metrics (the table is in :doc:`/operations`):

* **process metrics** (counters, histograms, the breaker gauge) are recorded where things
  happen: refresh outcomes and claim lag by
  :func:`~django_synerise.services.outcomes.record_refresh_batch`, upstream latency by the
  client, login outcomes by :func:`~django_synerise.services.login`. They live in the
  default registry; with ``PROMETHEUS_MULTIPROC_DIR`` set (Prometheus multiprocess mode),
  every process (Celery prefork children, web workers, the cron command) writes them to that
  directory and the exposition adds them up;
* **fleet metrics** (tokens by status, the due backlog, the halt) are read from the database
  at scrape time by :class:`FleetCollector`: one indexed query, cached for
  :data:`FLEET_CACHE_SECONDS`.

Expose them with :func:`metrics_view` (a Django view), :func:`serve_metrics` (an HTTP
server thread, e.g. in the Celery worker's main process) or your own endpoint over
:func:`build_registry`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.http import HttpResponse

from .token_status import TokenStatus

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from .breaker import CircuitBreaker

__all__ = [
    "FLEET_CACHE_SECONDS",
    "FleetCollector",
    "available",
    "build_registry",
    "metrics_view",
    "observe_breaker",
    "observe_claim_lag",
    "observe_login",
    "observe_refresh_outcomes",
    "observe_upstream",
    "serve_metrics",
]

#: Seconds a fleet snapshot (one query) is reused by later scrapes of the same process.
FLEET_CACHE_SECONDS = 5.0

#: Upstream operations (the ``operation`` label), by the path suffix of the Synerise call.
OPERATIONS = (
    ("/auth/refresh/client", "refresh"),
    ("/auth/login/client/conditional", "login"),
    ("/auth/login/client/anonymous", "api_key_probe"),
    ("/auth/login/client", "login"),
    ("/v4/public.pem", "public_key"),
    ("/v4/my-account/personal-information", "personal_information"),
)
_BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0)

_lock = threading.Lock()
_metrics: Any = None  # None: not tried yet; False: prometheus_client missing


class _Metrics:
    """The process metrics, created once in the default registry."""

    def __init__(self, prometheus: Any) -> None:
        self.refresh_outcomes = prometheus.Counter(
            "synerise_refresh_outcomes",
            "Token refresh outcomes (refreshed, transient, needs_login, halted).",
            ["outcome"],
        )
        self.login_outcomes = prometheus.Counter(
            "synerise_login_outcomes",
            "Sign-ins through Synerise by outcome (logged_in or the error code).",
            ["outcome"],
        )
        self.upstream = prometheus.Histogram(
            "synerise_upstream_request_duration_seconds",
            "Duration of calls to Synerise (answered or failed), by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
        )
        self.claim_lag = prometheus.Histogram(
            "synerise_refresh_claim_lag_seconds",
            "How late after refresh_at a token was taken for refresh.",
            buckets=_LAG_BUCKETS,
        )
        self.breaker = prometheus.Gauge(
            "synerise_breaker_state",
            "Circuit breaker towards Synerise: 0 closed, 1 half-open, 2 open (worst live process).",
            ["upstream"],
            multiprocess_mode="livemax",
        )


def _get() -> _Metrics | None:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                try:
                    import prometheus_client
                except ImportError:
                    _metrics = False
                else:
                    _metrics = _Metrics(prometheus_client)
    return _metrics or None


def available() -> bool:
    """Whether ``prometheus_client`` is installed (the metrics are recorded)."""
    return _get() is not None


# --------------------------------------------------------------------------- recording


def observe_refresh_outcomes(counts: dict[str, int]) -> None:
    """Add ``counts`` (outcome -> rows) to ``synerise_refresh_outcomes_total``."""
    metrics = _get()
    if metrics is None:
        return
    for outcome, count in counts.items():
        if count:
            metrics.refresh_outcomes.labels(outcome).inc(count)


def observe_claim_lag(seconds: list[float]) -> None:
    """Record how late (seconds after ``refresh_at``) each token was taken for refresh."""
    metrics = _get()
    if metrics is None:
        return
    for value in seconds:
        metrics.claim_lag.observe(max(0.0, value))


def observe_login(outcome: str) -> None:
    """Count one sign-in outcome (``logged_in`` or an error code)."""
    metrics = _get()
    if metrics is not None:
        metrics.login_outcomes.labels(outcome).inc()


def operation_of(path: str) -> str:
    """The ``operation`` label of a Synerise path (``other`` when unknown)."""
    for suffix, name in OPERATIONS:
        if path.endswith(suffix):
            return name
    return "other"


def observe_upstream(path: str, seconds: float) -> None:
    """Record the duration of one call to Synerise at ``path`` (answered or failed)."""
    metrics = _get()
    if metrics is not None:
        metrics.upstream.labels(operation_of(path)).observe(seconds)


def observe_breaker(breaker: CircuitBreaker) -> None:
    """Set ``synerise_breaker_state`` of this process for ``breaker``'s upstream."""
    metrics = _get()
    if metrics is not None:
        metrics.breaker.labels(breaker.name).set(_BREAKER_VALUES.get(breaker.state, 0.0))


# --------------------------------------------------------------------------- exposition


class FleetCollector:
    """Fleet gauges read from the database at scrape time (one query, cached briefly).

    ``synerise_tokens{status}``, ``synerise_tokens_due`` and ``synerise_refresh_halted``,
    from :func:`~django_synerise.services.status.fleet_counts`. With ``close_connections``
    the database connection of the scraping thread is closed after each read (for HTTP
    server threads outside Django's request cycle).
    """

    def __init__(
        self, *, cache_seconds: float = FLEET_CACHE_SECONDS, close_connections: bool = False
    ) -> None:
        self.cache_seconds = cache_seconds
        self.close_connections = close_connections
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, int]] | None = None

    def describe(self) -> list[Any]:
        """Nothing: registering the collector must not query the database."""
        return []

    def snapshot(self) -> dict[str, int]:
        """Return the fleet counts, from the cache when younger than ``cache_seconds``."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            # The HTTP client imports this module; the services need the app registry.
            from .services.status import fleet_counts

            try:
                counts = fleet_counts()
            finally:
                if self.close_connections:
                    connections.close_all()
            self._cached = (time.monotonic(), counts)
            return counts

    def collect(self) -> Iterator[Any]:
        """Yield the three gauge families."""
        from prometheus_client.core import GaugeMetricFamily  # optional extra: [prometheus]

        counts = self.snapshot()
        tokens = GaugeMetricFamily(
            "synerise_tokens", "Stored client tokens by status.", labels=["status"]
        )
        for status in TokenStatus.values:
            tokens.add_metric([status], counts.get(status, 0))
        yield tokens
        yield GaugeMetricFamily(
            "synerise_tokens_due",
            "Tokens the refresh pipeline would claim now (refresh time passed; the backlog).",
            value=counts.get("due", 0),
        )
        yield GaugeMetricFamily(
            "synerise_refresh_halted",
            "1 while background refresh is halted (Synerise rejects the API key), else 0.",
            value=counts.get("halted", 0),
        )


def build_registry(*, close_connections: bool = False) -> Any:
    """Return a ``CollectorRegistry`` holding every metric of this package.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) a ``MultiProcessCollector``
    over that directory, else the default registry's collectors; plus a
    :class:`FleetCollector`.

    :raises ImportError: ``prometheus_client`` is not installed (the ``[prometheus]`` extra).
    """
    import prometheus_client
    from prometheus_client import multiprocess

    _get()  # make sure the process metrics exist (a process that recorded nothing yet)
    registry = prometheus_client.CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client leaves MultiProcessCollector.__init__ unannotated.
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_DefaultRegistry(prometheus_client.REGISTRY))
    registry.register(FleetCollector(close_connections=close_connections))
    return registry


class _DefaultRegistry:
    """Adapter: the default registry's metrics inside another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


_view_registry: Any = None


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Django view answering a Prometheus scrape (text exposition format).

    It has no access control of its own: mount it on an internal host or path, or wrap it
    (see :doc:`/operations`). Answers 501 without ``prometheus_client``.
    """
    global _view_registry
    try:
        import prometheus_client
    except ImportError:
        return HttpResponse(
            "prometheus_client is not installed (pip install django-synerise[prometheus]).\n",
            status=501,
            content_type="text/plain",
        )
    if _view_registry is None:
        _view_registry = build_registry()
    return HttpResponse(
        prometheus_client.generate_latest(_view_registry),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )


def serve_metrics(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve every metric over HTTP on ``addr:port`` from a daemon thread of this process.

    Meant for a process without a web server: the Celery worker's main process (connect it
    to ``celery.signals.worker_ready``; in multiprocess mode it reports what the pool
    children recorded) or a small sidecar. Returns what ``start_http_server`` returns.

    :raises ImportError: ``prometheus_client`` is not installed.
    """
    import prometheus_client

    return prometheus_client.start_http_server(
        port, addr=addr, registry=build_registry(close_connections=True)
    )
