"""The window rules, directly: what a run's parameters may ask for, its hours, the past-hours rule,
the ledger rule and the gap view."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.windows import (
    HOUR,
    MAX_WINDOW,
    InvalidWindow,
    Window,
    cli_time,
    complete_hours,
    gap_rows,
    invalid_run_name,
    missing_windows,
    parse_time,
)

T0 = datetime(2026, 11, 1, 2, tzinfo=UTC)


def test_a_run_without_a_window_does_the_hour_before_its_scheduled_start():
    window = Window.of_run(None, None, datetime(2026, 11, 1, 10, 5, tzinfo=UTC))
    assert window == Window(datetime(2026, 11, 1, 9, tzinfo=UTC), datetime(2026, 11, 1, 10, tzinfo=UTC))
    # On the hour itself: the hour that just ended.
    assert Window.hour_before(datetime(2026, 11, 1, 10, tzinfo=UTC)).start == datetime(
        2026, 11, 1, 9, tzinfo=UTC
    )


def test_a_scheduled_time_from_prefect_gives_plain_utc_hours():
    """Prefect's runtime hands out pendulum datetimes; the window's arithmetic must not depend on them."""
    import pendulum

    window = Window.of_run(None, None, pendulum.datetime(2026, 11, 1, 3, 5, tz="Asia/Shanghai"))
    assert type(window.start) is datetime and type(window.end) is datetime
    assert window == Window(datetime(2026, 10, 31, 18, tzinfo=UTC), datetime(2026, 10, 31, 19, tzinfo=UTC))
    assert window.whole_hours() == [window.start]
    assert type(parse_time(pendulum.datetime(2026, 11, 1, tz="UTC"), "start")) is datetime


def test_times_in_any_zone_and_text_are_read_as_utc():
    plus8 = timezone(timedelta(hours=8))
    window = Window.of_run("2026-11-01T10:00:00+08:00", datetime(2026, 11, 1, 11, tzinfo=plus8), None)
    assert window == Window(T0, T0 + HOUR)
    assert window.start.tzinfo is UTC
    assert Window.of_run("2026-11-01T02:00:00Z", "2026-11-01T03:00:00Z", None) == Window(T0, T0 + HOUR)


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        ("2026-11-01T02:00:00Z", None, "start is given without end"),
        (None, "2026-11-01T02:00:00Z", "end is given without start"),
        ("2026-11-01T03:00:00Z", "2026-11-01T02:00:00Z", "end 2026-11-01 02:00:00 UTC is not after start"),
        ("2026-11-01T02:00:00Z", "2026-11-01T02:00:00Z", "end 2026-11-01 02:00:00 UTC is not after start"),
        ("2026-11-01T02:00:00", "2026-11-01T03:00:00Z", "start 2026-11-01T02:00:00 has no time zone"),
        ("2026-11-01T02:00:00Z", "yesterday", "end 'yesterday' is not an ISO 8601 time"),
        ("2026-02-30T02:00:00Z", "2026-03-01T02:00:00Z", "start '2026-02-30T02:00:00Z' is not an ISO 8601"),
        (
            "2026-11-01T00:00:00Z",
            "2026-11-08T00:00:01Z",
            "end 2026-11-08 00:00:01 UTC is more than 7 days after start",
        ),
    ],
)
def test_a_window_a_run_must_not_do_names_the_parameter_and_the_rule(start, end, words):
    with pytest.raises(InvalidWindow, match="^" + words.split(" ")[0]) as refused:
        Window.of_run(start, end, T0)
    assert words in str(refused.value)


def test_a_long_window_is_taken_only_when_asked_for():
    start, end = T0, T0 + MAX_WINDOW + HOUR
    assert Window.of_run(start, end, None, long_window=True) == Window(start, end)
    assert Window.of_run(start, T0 + MAX_WINDOW, None) == Window(start, T0 + MAX_WINDOW)


def test_whole_hours_and_hours_touching():
    window = Window(T0 + timedelta(minutes=30), T0 + 3 * HOUR + timedelta(minutes=10))
    assert window.whole_hours() == [T0 + HOUR, T0 + 2 * HOUR]
    assert window.hours_touching() == [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]
    assert Window(T0, T0 + timedelta(minutes=20)).whole_hours() == []


def test_settled_hours_leave_out_the_live_hour_and_later():
    """At 10:20 the live schedule is doing 09:00-10:00: settled are the hours before 09:00."""
    now = datetime(2026, 11, 1, 10, 20, tzinfo=UTC)
    window = Window(datetime(2026, 11, 1, 6, tzinfo=UTC), datetime(2026, 11, 1, 12, tzinfo=UTC))
    assert window.settled_hours(now) == [datetime(2026, 11, 1, h, tzinfo=UTC) for h in (6, 7, 8)]
    assert Window.live(now) == Window(
        datetime(2026, 11, 1, 9, tzinfo=UTC), datetime(2026, 11, 1, 10, tzinfo=UTC)
    )


def test_run_name_key_and_description():
    window = Window(T0, T0 + HOUR)
    assert window.run_name("nvr-02") == "nvr-02 2026-11-01 02:00"
    assert window.key("nvr-02") == "nvr-02/2026-11-01T02:00:00+00:00/2026-11-01T03:00:00+00:00"
    assert window.key("nvr-02") != Window(T0, T0 + 2 * HOUR).key("nvr-02")
    assert window.describe() == "2026-11-01 02:00 .. 03:00 UTC"
    assert Window(T0, T0 + 3 * 24 * HOUR).describe() == "2026-11-01 02:00 .. 2026-11-04 02:00 UTC"
    assert (
        Window(T0.replace(hour=0), T0.replace(hour=0) + 24 * HOUR).describe()
        == "2026-11-01 00:00 .. 00:00 UTC"
    )
    assert invalid_run_name("nvr-02") == "nvr-02 invalid window"


def test_cli_time_explains_its_rule():
    assert cli_time("2026-11-01T02:00:00Z") == T0
    with pytest.raises(argparse.ArgumentTypeError, match="has no time zone"):
        cli_time("2026-11-01T02:00:00")


def test_an_hour_is_complete_only_when_every_segment_touching_it_was_persisted():
    window = Window(T0, T0 + 2 * HOUR)
    seg = timedelta(minutes=30)
    segments = [
        (1, T0, T0 + seg, True),
        (1, T0 + seg, T0 + 2 * seg, True),
        (1, T0 + HOUR + seg - timedelta(minutes=40), T0 + HOUR + seg, False),  # 02:50-03:30 failed
        (2, T0, T0 + seg, True),
    ]
    complete = complete_hours([1, 2], window, segments)
    # Channel 1: 02:00 is touched by the failed 02:50 segment too; 03:00 as well.
    assert complete == {(2, T0): 1, (2, T0 + HOUR): 0}
    segments[2] = (*segments[2][:3], True)
    assert complete_hours([1, 2], window, segments) == {
        (1, T0): 3, (1, T0 + HOUR): 1, (2, T0): 1, (2, T0 + HOUR): 0,
    }  # fmt: skip


def test_missing_windows_and_the_gap_view():
    hours = [T0, T0 + HOUR, T0 + 2 * HOUR]
    complete = {("a", 1, T0), ("a", 2, T0), ("a", 1, T0 + HOUR), ("b", 1, T0 + 2 * HOUR)}
    missing = missing_windows({"b": [1], "a": [1, 2]}, hours, complete)
    assert missing == {
        (T0, "b"): [1],
        (T0 + HOUR, "a"): [2],
        (T0 + HOUR, "b"): [1],
        (T0 + 2 * HOUR, "a"): [1, 2],
    }
    assert list(missing) == sorted(missing)  # oldest first
    assert gap_rows(missing) == [
        {
            "recorder": "a",
            "hours missing": 2,
            "first": (T0 + HOUR).isoformat(),
            "last": (T0 + 2 * HOUR).isoformat(),
        },
        {"recorder": "b", "hours missing": 2, "first": T0.isoformat(), "last": (T0 + HOUR).isoformat()},
    ]
    assert missing_windows({"a": [1]}, hours, {("a", 1, h) for h in hours}) == {}
