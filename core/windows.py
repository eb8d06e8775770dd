"""Windows of footage: which hour a run is for.

A scheduled run's window comes from its scheduled start time, never from the clock: a run
that starts late (workers down, a queue backed up) still does the hour it was scheduled
for, and the runs caught up after an outage each do their own hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
