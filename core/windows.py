"""Windows of footage: which hour a run is for.

A scheduled run's window comes from its scheduled start time, never from the clock: a run
that starts late (workers down, a queue backed up) still does the hour it was scheduled
for, and the runs caught up after an outage each do their own hour.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

HOUR = timedelta(hours=1)


def hour_before(scheduled: datetime) -> tuple[datetime, datetime]:
    """The whole hour that ended at or before `scheduled` (UTC): a 10:05 run does 09:00-10:00."""
    end = scheduled.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return end - HOUR, end


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """`start` and `end` in UTC, or a ValueError saying what is wrong with them."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a time zone (e.g. 2026-11-01T10:00:00Z)")
    if end <= start:
        raise ValueError(f"empty window: end {end} is not after start {start}")
    return start.astimezone(UTC), end.astimezone(UTC)


def whole_hours(start: datetime, end: datetime) -> list[datetime]:
    """The hours (their starts, UTC) that lie wholly inside [start, end)."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += HOUR
    hours = []
    while first + HOUR <= end:
        hours.append(first)
        first += HOUR
    return hours


def hours_touching(start: datetime, end: datetime) -> list[datetime]:
    """The hours (their starts, UTC) that overlap [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def missing_windows(
    channels: dict[str, list[int]], hours: list[datetime], complete: set[tuple[str, int, datetime]]
) -> dict[tuple[datetime, str], list[int]]:
    """{(hour, recorder): channels missing}, for every recorder's channels and hours not complete."""
    missing: dict[tuple[datetime, str], list[int]] = defaultdict(list)
    for hour in hours:
        for recorder, chans in sorted(channels.items()):
            for channel in chans:
                if (recorder, channel, hour) not in complete:
                    missing[(hour, recorder)].append(channel)
    return dict(sorted(missing.items()))


def gap_rows(missing: dict[tuple[datetime, str], list[int]]) -> list[dict[str, Any]]:
    """The gap view: one row per recorder, how many hours miss and the first and last of them."""
    by_recorder: dict[str, list[datetime]] = defaultdict(list)
    for hour, recorder in missing:
        by_recorder[recorder].append(hour)
    return [
        {"recorder": r, "hours missing": len(h), "first": min(h).isoformat(), "last": max(h).isoformat()}
        for r, h in sorted(by_recorder.items())
    ]
