"""A channel's day drawn as inline SVG: objects on a timeline by label, and objects per hour.

Pure geometry for the templates (coordinates in the SVG's own units), so that the page needs no
script and no outside resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from blocks.clickhouse import HourlyObjects
from blocks.clickhouse_schema import ObjectRow
from review.queries import iso, object_ref

DAY_S = 24 * 3600
WIDTH = 1440.0  # a unit per minute
ROW_HEIGHT = 22.0
BAR_HEIGHT = 120.0
PALETTE = ("#2b7bb9", "#d9822b", "#3a9a5b", "#b9452b", "#7d5ab5", "#8c6d31", "#c2418c", "#5f6b73")


def label_colours(labels: list[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(set(labels)))}


@dataclass(frozen=True)
class Span:
    x: float
    y: float
    width: float
    colour: str
    href: str
    title: str


@dataclass(frozen=True)
class Timeline:
    labels: list[tuple[str, float, str]]  # label, y of its row, colour
    spans: list[Span]
    height: float


def timeline(objects: list[ObjectRow], day_start: datetime, colours: dict[str, str]) -> Timeline:
    """One row per label; each object a bar from its start to its end (at least a minute wide)."""
    labels = sorted({o.label for o in objects})
    rows = {label: i * ROW_HEIGHT for i, label in enumerate(labels)}
    spans = []
    for o in objects:
        x0 = max(0.0, (o.start - day_start).total_seconds()) / DAY_S * WIDTH
        x1 = min(float(DAY_S), (o.end - day_start).total_seconds()) / DAY_S * WIDTH
        title = f"{o.label} {o.best_score:.2f} {iso(o.start)} - {iso(o.end)}"
        spans.append(Span(x0, rows[o.label] + 3, max(1.0, x1 - x0), colours[o.label], f"/objects/{object_ref(o)}", title))
    return Timeline([(label, rows[label], colours[label]) for label in labels], spans, len(labels) * ROW_HEIGHT)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


def hourly_bars(hours: list[HourlyObjects], day_start: datetime, colours: dict[str, str]) -> tuple[list[Bar], int]:
    """Per hour, the labels' counts stacked; and the highest hour's total (the scale)."""
    totals: dict[datetime, int] = {}
    for h in hours:
        totals[h.hour] = totals.get(h.hour, 0) + h.objects
    top = max(totals.values(), default=0)
    bars = []
    stacked: dict[datetime, float] = {}
    for h in sorted(hours, key=lambda h: (h.hour, h.label)):
        index = int((h.hour - day_start) / timedelta(hours=1))
        if not 0 <= index < 24 or top == 0:
            continue
        height = h.objects / top * BAR_HEIGHT
        below = stacked.get(h.hour, 0.0)
        stacked[h.hour] = below + height
        bars.append(Bar(index * 60.0 + 6, BAR_HEIGHT - below - height, 48.0, height, colours[h.label],
                        f"{h.hour:%H}:00 {h.label}: {h.objects}"))  # fmt: skip
    return bars, top
