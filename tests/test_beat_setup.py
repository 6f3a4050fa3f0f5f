"""``manage.py synerise_setup_beat``: django-celery-beat periodic tasks from the package's
schedule, idempotently; and check W110 that points at it."""

from __future__ import annotations

import io
import json

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_synerise import checks
from django_synerise.schedule import BEAT_SCHEDULE, PURGE_TASK, REFRESH_TASK

DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


def run() -> str:
    out = io.StringIO()
    call_command("synerise_setup_beat", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_setup_beat_twice_leaves_one_row_per_task() -> None:
    if not apps.is_installed("django_celery_beat"):
        # Django 6.1 environments cannot install django-celery-beat 2.9 (Django < 6.1): the
        # command must then say what to do instead of failing obscurely.
        with pytest.raises(CommandError, match="django_celery_beat is not installed"):
            run()
        return
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    first = run()
    assert first.count("created ") == len(BEAT_SCHEDULE)
    changed_at = PeriodicTasks.last_change()
    second = run()
    assert second.count("unchanged ") == len(BEAT_SCHEDULE) and "created" not in second
    assert PeriodicTasks.last_change() == changed_at      # beat is not told to reload
    rows = {row.name: row for row in PeriodicTask.objects.all()}
    assert set(rows) == set(BEAT_SCHEDULE)
    assert PeriodicTask.objects.filter(task=REFRESH_TASK).count() == 1
    assert PeriodicTask.objects.filter(task=PURGE_TASK).count() == 1
    for name, entry in BEAT_SCHEDULE.items():
        row = rows[name]
        assert row.task == entry["task"] and row.enabled
        assert (row.interval.every, row.interval.period) == (
            int(entry["schedule"]), IntervalSchedule.SECONDS)
        assert row.expire_seconds == entry["options"]["expires"]
        assert json.loads(row.kwargs) == entry.get("kwargs", {})  # the connect entry: pending
    assert IntervalSchedule.objects.count() == len({e["schedule"] for e in BEAT_SCHEDULE.values()})


@pytest.mark.django_db
def test_setup_beat_repairs_drift_and_keeps_a_disabled_task_disabled() -> None:
    if not apps.is_installed("django_celery_beat"):
        with pytest.raises(CommandError):
            run()
        return
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    run()
    name = next(n for n, e in BEAT_SCHEDULE.items() if e["task"] == REFRESH_TASK)
    crontab = CrontabSchedule.objects.create(minute="*/5")
    PeriodicTask.objects.filter(name=name).update(
        task="someone.else", interval=None, crontab=crontab, enabled=False)
    output = run()
    assert f"updated {name}" in output
    row = PeriodicTask.objects.get(name=name)
    assert row.task == REFRESH_TASK and row.crontab_id is None and row.interval.every == 60
    assert row.enabled is False                     # an operator's choice is kept
    assert PeriodicTask.objects.count() == len(BEAT_SCHEDULE)


@pytest.mark.django_db
def test_w110_until_the_refresh_task_exists() -> None:
    if not apps.is_installed("django_celery_beat"):
        assert checks.check_beat_tasks(databases=["default"]) == []
        return
    from django_celery_beat.models import PeriodicTask

    def ids() -> set[str]:
        return {m.id.split(".")[-1] for m in checks.check_beat_tasks(databases=["default"])}

    with override_settings(CELERY_BROKER_URL="redis://x", CELERY_BEAT_SCHEDULER=DATABASE_SCHEDULER,
                           CELERY_BEAT_SCHEDULE={}):
        assert ids() == {"W110"}
        assert "synerise_setup_beat" in checks.MESSAGES["W110"].hint
        assert checks.check_beat_tasks(databases=None) == []   # needs --database
        run()
        assert ids() == set()
        PeriodicTask.objects.filter(task=REFRESH_TASK).update(enabled=False)
        assert ids() == {"W110"}
    # Celery's own scheduler, or the entry in CELERY_BEAT_SCHEDULE: the rows do not matter.
    with override_settings(CELERY_BROKER_URL="redis://x", CELERY_BEAT_SCHEDULER=None,
                           CELERY_BEAT_SCHEDULE={}):
        assert ids() == set()
    with override_settings(CELERY_BROKER_URL="redis://x", CELERY_BEAT_SCHEDULER=DATABASE_SCHEDULER,
                           CELERY_BEAT_SCHEDULE=dict(BEAT_SCHEDULE)):
        assert ids() == set()
