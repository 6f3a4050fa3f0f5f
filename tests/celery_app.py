"""Celery app of the test suite: ``celery -A tests.celery_app worker`` (see test_tasks_celery).

Signals the worker sends are appended as JSON lines to ``SYNERISE_TEST_SIGNAL_LOG`` so the
test process can assert on them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from celery import Celery
from celery.signals import task_postrun, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.celery_settings")

from django.apps import apps  # noqa: E402

if not apps.ready:
    django.setup()

app = Celery("django_synerise_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")

import django_synerise.tasks  # noqa: E402,F401  (registers the shared tasks)
from django_synerise import signals  # noqa: E402

_SIGNAL_LOG = os.environ.get("SYNERISE_TEST_SIGNAL_LOG")


def _recorder(name: str) -> Any:
    def record(sender: Any, token: Any = None, **kwargs: Any) -> None:
        if not _SIGNAL_LOG:
            return
        entry = {"signal": name, "token": getattr(token, "pk", None), "pid": os.getpid()}
        for key in ("reason", "will_retry"):
            if key in kwargs:
                entry[key] = kwargs[key]
        if "error" in kwargs:
            entry["error"] = getattr(kwargs["error"], "code", type(kwargs["error"]).__name__)
        with open(_SIGNAL_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    return record


for _name in ("token_refreshed", "token_refresh_failed", "token_expired"):
    getattr(signals, _name).connect(_recorder(_name), weak=False,
                                    dispatch_uid=f"tests-celery-{_name}")


def _halt_recorder(name: str) -> Any:
    def record(sender: Any, halt: Any = None, **kwargs: Any) -> None:
        if _SIGNAL_LOG:
            entry = {"signal": name, "reason": getattr(halt, "reason", None), "pid": os.getpid()}
            with open(_SIGNAL_LOG, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    return record


for _name in ("refresh_halted", "refresh_resumed"):
    getattr(signals, _name).connect(_halt_recorder(_name), weak=False,
                                    dispatch_uid=f"tests-celery-{_name}")


@task_postrun.connect(weak=False, dispatch_uid="tests-celery-task-done")
def _task_done(sender: Any = None, retval: Any = None, state: str | None = None,
               **kwargs: Any) -> None:
    """Log each finished task (name, state, return value) so tests can follow the beats."""
    if _SIGNAL_LOG:
        entry = {"signal": "task_done", "task": getattr(sender, "name", None), "state": state,
                 "retval": retval if isinstance(retval, dict) else None, "pid": os.getpid()}
        with open(_SIGNAL_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


@worker_ready.connect(weak=False, dispatch_uid="tests-celery-metrics")
def _serve_metrics(**kwargs: Any) -> None:
    """With ``SYNERISE_TEST_METRICS_PORT``, serve the package's metrics from the worker's main
    process (tests/test_metrics.py scrapes it)."""
    port = os.environ.get("SYNERISE_TEST_METRICS_PORT")
    if port:
        from django_synerise.metrics import serve_metrics

        serve_metrics(int(port))
