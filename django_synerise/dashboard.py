"""The admin's token dashboard: what it shows, read from the service layer, and its charts.

:func:`dashboard_context` gathers everything in a fixed number of queries, whatever the
number of tokens: fleet counts, the expiry histogram, the hourly outcomes and the last
scheduler run, plus the halt's details while refresh is halted (four or five). The charts
are drawn server-side as SVG from :func:`bar_chart`'s geometry: no JavaScript, no CDN.
Every figure is also listed in a table under its chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .models import TokenStatus
from .services.halt import current_halt
from .services.outcomes import OUTCOMES, last_run, outcome_history
from .services.status import breaker_states, expiry_histogram, fleet_counts

__all__ = ["OUTCOME_COLORS", "Bar", "bar_chart", "dashboard_context"]

#: Colour of each refresh outcome in the charts and legends.
OUTCOME_COLORS = {
    "refreshed": "#2e7d32",
    "transient": "#ef6c00",
    "needs_login": "#c62828",
    "halted": "#6a1b9a",
}
OUTCOME_LABELS = {
    "refreshed": _("refreshed"),
    "transient": _("transient failure (retried)"),
    "needs_login": _("needs login"),
    "halted": _("halted"),
}
EXPIRY_COLOR = "#417690"

_WIDTH = 480
_HEIGHT = 220
_LEFT = 40
_BOTTOM = 30
_TOP = 10


@dataclass(frozen=True)
class Bar:
    """One rectangle of a chart (SVG user units) and what it stands for."""

    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


def bar_chart(
    columns: list[list[tuple[int, str, str]]],
    labels: list[str],
    *,
    label_every: int = 1,
) -> dict[str, Any]:
    """Geometry of a (stacked) bar chart in a ``480 x 220`` SVG view box (drawn at most
    about twice that size, so its 16-unit text stays readable from 390 px up).

    ``columns`` holds, per bar, its segments bottom up as ``(value, colour, title)``;
    ``labels`` one x-axis label per bar (every ``label_every``-th is drawn).

    :returns: ``{"width", "height", "bars": [Bar], "labels": [(x, y, text)], "ticks": [(y,
        text)], "axis_y", "left", "right"}``.
    """
    top_value = max([sum(value for value, _c, _t in column) for column in columns] + [0])
    scale_max = max(1, top_value)
    plot_height = _HEIGHT - _TOP - _BOTTOM
    axis_y = _HEIGHT - _BOTTOM
    slot = (_WIDTH - _LEFT - 8) / max(1, len(columns))
    width = slot * 0.72
    bars: list[Bar] = []
    text: list[tuple[float, float, str]] = []
    for index, column in enumerate(columns):
        x = _LEFT + slot * index + (slot - width) / 2
        bottom = float(axis_y)
        for value, color, title in column:
            if value <= 0:
                continue
            height = max(1.0, plot_height * value / scale_max)
            bottom -= height
            bars.append(
                Bar(round(x, 1), round(bottom, 1), round(width, 1), round(height, 1), color, title)
            )
        if index % max(1, label_every) == 0:
            text.append((round(x + width / 2, 1), axis_y + 20, labels[index]))
    values = {0, scale_max // 2, scale_max}
    ticks = sorted((round(axis_y - plot_height * v / scale_max, 1), str(v)) for v in values)
    return {
        "width": _WIDTH,
        "height": _HEIGHT,
        "bars": bars,
        "labels": text,
        "ticks": ticks,
        "axis_y": axis_y,
        "left": _LEFT,
        "right": _WIDTH - 4,
    }


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def dashboard_context(*, now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard template shows (four or five queries, see the module
    docstring).

    Keys: ``status_counts`` (``[(value, label, count)]``), ``total``, ``due``, ``halt`` (the
    :class:`~django_synerise.models.RefreshHalt` or ``None``), ``expiry`` (the histogram
    rows), ``expiry_chart``, ``outcomes`` (hourly history), ``outcome_chart``,
    ``outcome_totals`` (``[(key, label, count, colour)]``), ``runs_24h``, ``last_run``,
    ``breakers`` (this process's breakers) and ``now``.
    """
    now = now or timezone.now()
    counts = fleet_counts()
    expiry = expiry_histogram(now=now)
    history = outcome_history(now=now)
    expiry_chart = bar_chart(
        [
            [(row["count"], EXPIRY_COLOR, f"{_clock(row['start'])}: {row['count']}")]
            for row in expiry
        ],
        [_clock(row["start"]) for row in expiry],
        label_every=2,
    )
    columns = []
    for index, hour in enumerate(history["hours"]):
        columns.append(
            [
                (
                    history["series"][outcome][index],
                    OUTCOME_COLORS[outcome],
                    f"{_clock(hour)} {OUTCOME_LABELS[outcome]}: "
                    f"{history['series'][outcome][index]}",
                )
                for outcome in OUTCOMES
            ]
        )
    outcome_chart = bar_chart(columns, [_clock(hour) for hour in history["hours"]], label_every=4)
    status_counts = [(value, label, counts.get(value, 0)) for value, label in TokenStatus.choices]
    return {
        "now": now,
        "status_counts": status_counts,
        "total": sum(count for _v, _l, count in status_counts),
        "due": counts.get("due", 0),
        "halt": current_halt() if counts.get("halted") else None,
        "expiry": expiry,
        "expiry_total": sum(row["count"] for row in expiry),
        "expiry_chart": expiry_chart,
        "outcomes": history,
        "outcome_chart": outcome_chart,
        "outcome_totals": [
            (key, OUTCOME_LABELS[key], history["totals"][key], OUTCOME_COLORS[key])
            for key in OUTCOMES
        ],
        "outcome_rows": [
            (hour, [history["series"][key][i] for key in OUTCOMES])
            for i, hour in enumerate(history["hours"])
        ][::-1],
        "runs_24h": sum(history["runs"]),
        "last_run": last_run(),
        "breakers": breaker_states(),
    }
