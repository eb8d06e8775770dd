"""Windows of footage: the span of time a pipeline run is for, and the rules every flow shares.

A window is given by a run's `start` and `end` parameters (both, or neither), or comes from
a scheduled run's start time, never from the clock: a run that starts late (workers down, a
queue backed up) still does the hour it was scheduled for, and the runs caught up after an
outage each do their own hour.

One home for: how a window is read from parameters and what is refused (`Window.of_run`),
its hours and which of them are past (`settled_hours`: the ones backfill may run and the
report lists as gaps), a run's name and its idempotency key.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

HOUR = timedelta(hours=1)
# The longest window a run takes unless it is asked for explicitly (`long_window`): a week of
# one recorder is 168 hours of segments in one flow run; longer is nearly always a typo.
MAX_WINDOW = timedelta(days=7)
TIME_RULE = "an ISO 8601 time with a time zone, e.g. 2026-11-01T10:00:00Z"
# What the run form and `prefect deployment run` accept for `start` and `end` (checked by the
# Prefect server before a run exists): ISO 8601 with a time zone. The server's refusal quotes the
# pattern, so it opens with the rule in words (a regex comment).
TIME_PATTERN = (
    f"(?#{TIME_RULE})"
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?"
    r"(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$"
)


class InvalidWindow(ValueError):
    """A window a run must not do; the message names the parameter and the rule."""


def parse_time(value: object, name: str) -> datetime:
    """A run parameter as an aware UTC datetime, or InvalidWindow naming it."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidWindow(f"{name} {value!r} is not {TIME_RULE}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidWindow(f"{name} {value!s} has no time zone: give {TIME_RULE}")
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    """A plain `datetime` in UTC, also from a subclass (Prefect hands out pendulum's, whose
    differences do not divide by a timedelta)."""
    at = moment.astimezone(UTC)
    return datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, tzinfo=UTC)


def cli_time(value: str) -> datetime:
    """An argparse type: a time with a time zone, or the rule it breaks."""
    try:
        return parse_time(value, "time")
    except InvalidWindow as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hour_of(moment: datetime) -> datetime:
    return _utc(moment).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def of_run(
        cls, start: object, end: object, scheduled: datetime | None, long_window: bool = False
    ) -> Window:
        """The window a run's parameters ask for: both `start` and `end`, or neither (the hour
        before `scheduled`). InvalidWindow names what is wrong."""
        if start is None and end is None:
            if scheduled is None:
                raise InvalidWindow("start and end are empty and the run has no scheduled start time")
            return cls.hour_before(scheduled)
        if start is None or end is None:
            given, missing = ("start", "end") if end is None else ("end", "start")
            raise InvalidWindow(f"{given} is given without {missing}: give both, or neither for the hour "
                                "before the run's scheduled start")  # fmt: skip
        return cls.between(parse_time(start, "start"), parse_time(end, "end"), long_window)

    @classmethod
    def between(cls, start: datetime, end: datetime, long_window: bool = False) -> Window:
        start, end = parse_time(start, "start"), parse_time(end, "end")
        if end <= start:
            raise InvalidWindow(
                f"end {end:%Y-%m-%d %H:%M:%S} UTC is not after start {start:%Y-%m-%d %H:%M:%S} UTC"
            )
        if end - start > MAX_WINDOW and not long_window:
            raise InvalidWindow(
                f"end {end:%Y-%m-%d %H:%M:%S} UTC is more than {MAX_WINDOW.days} days after start "
                f"{start:%Y-%m-%d %H:%M:%S} UTC: split the window, or set long_window to run it as one"
            )
        return cls(start, end)

    @classmethod
    def hour_before(cls, scheduled: datetime) -> Window:
        """The whole hour that ended at or before `scheduled`: a 10:05 run does 09:00-10:00."""
        end = _hour_of(scheduled)
        return cls(end - HOUR, end)

    @classmethod
    def live(cls, now: datetime) -> Window:
        """The hour the live schedule is doing at `now` (the hour before the current one)."""
        return cls.hour_before(now)

    def whole_hours(self) -> list[datetime]:
        """The hours (their starts) that lie wholly inside the window."""
        first = _hour_of(self.start)
        if first < self.start:
            first += HOUR
        return [first + i * HOUR for i in range(max(0, int((self.end - first) / HOUR)))]

    def hours_touching(self) -> list[datetime]:
        """The hours (their starts) that overlap the window."""
        hour, hours = _hour_of(self.start), []
        while hour < self.end:
            hours.append(hour)
            hour += HOUR
        return hours

    def settled_hours(self, now: datetime) -> list[datetime]:
        """The hours touching the window that are over and not the live schedule's: the hours
        backfill may run, and the only ones a report may call missing."""
        live = Window.live(now).start
        return [h for h in self.hours_touching() if h < live]

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and self.end > other.start

    def run_name(self, recorder: str) -> str:
        """`<recorder> <start>`: what alerts, reports and the UI's run list call a run."""
        return f"{recorder} {self.start:%Y-%m-%d %H:%M}"

    def key(self, recorder: str) -> str:
        """The idempotency key of a recorder's run for this window: one run per recorder and window."""
        return f"{recorder}/{self.start.isoformat()}/{self.end.isoformat()}"

    def describe(self) -> str:
        """`2026-11-01 02:00 .. 03:00 UTC`, or with both dates when it spans days."""
        same_day = self.start.date() == (self.end - timedelta(microseconds=1)).date()
        end = f"{self.end:%H:%M}" if same_day else f"{self.end:%Y-%m-%d %H:%M}"
        return f"{self.start:%Y-%m-%d %H:%M} .. {end} UTC"

    def parameters(self) -> dict[str, str]:
        """The run parameters that ask for this window."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def invalid_run_name(recorder: str) -> str:
    """The name of a run whose window was refused: it counts in no window's failures."""
    return f"{recorder} invalid window"


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


def complete_hours(
    channels: list[int], window: Window, segments: list[tuple[int, datetime, datetime, bool]]
) -> dict[tuple[int, datetime], int]:
    """The ledger rule: {(channel, hour): segments} for each whole hour of the window in which every
    segment touching it was persisted. `segments`: (channel, start, end, persisted)."""
    complete = {}
    for channel in channels:
        for hour in window.whole_hours():
            touching = [
                ok for ch, start, end, ok in segments if ch == channel and start < hour + HOUR and end > hour
            ]
            if all(touching):
                complete[(channel, hour)] = len(touching)
    return complete
