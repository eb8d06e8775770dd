"""Recorder clocks: Hikvision time-zone strings, device-local timestamps and their UTC meaning.

Recorders keep local wall-clock time. Search answers write it with a `Z` that does not
mean UTC, a few firmwares write a real offset, and `/ISAPI/System/time` gives the zone as
a POSIX-like string with Hikvision's twists:
- the sign is POSIX's (`CST-8:00:00` is UTC+8), minutes and seconds are allowed;
- after `DST` comes the amount the clock goes forward, not the summer offset
  (`CST-1:00:00DST01:00:00,M3.5.0/02:00:00,M10.5.0/03:00:00` is Central Europe);
- newer firmware and web pages also show `UTC+05:30` / `GMT+08:00` in the usual sign.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

ZERO = timedelta(0)

_CLOCK = r"(?P<{0}sign>[+-])?(?P<{0}h>\d{{1,2}})(?::(?P<{0}m>\d{{1,2}}))?(?::(?P<{0}s>\d{{1,2}}))?"
_POSIX_TZ = re.compile(
    r"^(?P<name>[A-Za-z]{3,}|<[^>]+>)"
    + _CLOCK.format("std_")
    + r"(?:(?P<dst>[A-Za-z]{3,}|<[^>]+>)(?:"
    + _CLOCK.format("dst_")
    + r")?(?:,(?P<start>[^,]+),(?P<end>[^,]+))?)?$"
)
# "UTC+05:30", "GMT-03:00": the display form, in the everyday sign convention.
_DISPLAY_TZ = re.compile(r"^(?:UTC|GMT)(?P<sign>[+-])(?P<h>\d{2}):(?P<m>\d{2})$")
_RULE = re.compile(r"^M(?P<month>\d{1,2})\.(?P<week>[1-5])\.(?P<wday>[0-6])(?:/" + _CLOCK.format("") + r")?$")


class TimeZoneFormatError(ValueError):
    pass


def _clock_delta(match: re.Match[str], prefix: str) -> timedelta:
    hours = int(match.group(f"{prefix}h") or 0)
    minutes = int(match.group(f"{prefix}m") or 0)
    seconds = int(match.group(f"{prefix}s") or 0)
    delta = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return -delta if match.group(f"{prefix}sign") == "-" else delta


@dataclass(frozen=True)
class _Transition:
    """`Mm.w.d/time`: day d (0 = Sunday) of week w (5 = last) of month m, at local time."""

    month: int
    week: int
    weekday: int
    at: timedelta

    @classmethod
    def parse(cls, text: str) -> _Transition:
        match = _RULE.match(text.strip())
        if not match or not 1 <= int(match.group("month")) <= 12:
            raise TimeZoneFormatError(f"unsupported DST rule {text!r}")
        at = _clock_delta(match, "") if match.group("h") else timedelta(hours=2)
        return cls(int(match.group("month")), int(match.group("week")), int(match.group("wday")), at)

    def local_moment(self, year: int) -> datetime:
        first_weekday, days_in_month = calendar.monthrange(year, self.month)
        # calendar: Monday = 0; POSIX: Sunday = 0.
        first_match = 1 + (self.weekday - (first_weekday + 1) % 7) % 7
        day = first_match + 7 * (self.week - 1)
        while day > days_in_month:
            day -= 7
        return datetime.combine(date(year, self.month, day), datetime.min.time()) + self.at


class DeviceTimeZone(tzinfo):
    """A recorder's zone: a standard offset, optionally with yearly DST rules."""

    def __init__(
        self,
        raw: str,
        standard: timedelta,
        dst_shift: timedelta = ZERO,
        start: _Transition | None = None,
        end: _Transition | None = None,
    ) -> None:
        self.raw = raw
        self.standard = standard
        self.dst_shift = dst_shift
        self.start = start
        self.end = end

    def __repr__(self) -> str:
        return f"DeviceTimeZone({self.raw!r})"

    def _in_dst_standard_time(self, standard_local: datetime) -> bool:
        """Whether DST applies at a moment given in standard (winter) local time."""
        if self.start is None or self.end is None or not self.dst_shift:
            return False
        year = standard_local.year
        begins = self.start.local_moment(year)
        # The end rule is written in summer time.
        ends = self.end.local_moment(year) - self.dst_shift
        if begins < ends:
            return begins <= standard_local < ends
        return not (ends <= standard_local < begins)  # southern hemisphere

    def utcoffset(self, dt: datetime | None) -> timedelta:
        if dt is None:
            return self.standard
        wall = dt.replace(tzinfo=None)
        # A wall time in the repeated autumn hour reads as summer time unless fold=1.
        if self._in_dst_standard_time(wall - (ZERO if dt.fold else self.dst_shift)):
            return self.standard + self.dst_shift
        return self.standard

    def dst(self, dt: datetime | None) -> timedelta:
        return self.utcoffset(dt) - self.standard

    def tzname(self, dt: datetime | None) -> str:
        return self.raw

    def fromutc(self, dt: datetime) -> datetime:
        standard_local = dt.replace(tzinfo=None) + self.standard
        if self._in_dst_standard_time(standard_local):
            return (standard_local + self.dst_shift).replace(tzinfo=self)
        wall = standard_local.replace(tzinfo=self)
        # Mark the second pass through the repeated hour so utcoffset reads it as winter time.
        if self._in_dst_standard_time(standard_local - self.dst_shift):
            wall = wall.replace(fold=1)
        return wall


def parse_timezone(raw: str) -> DeviceTimeZone:
    """Parse a recorder `timeZone` string; raise TimeZoneFormatError when it is not one."""
    text = raw.strip()
    display = _DISPLAY_TZ.match(text)
    if display:
        offset = timedelta(hours=int(display.group("h")), minutes=int(display.group("m")))
        return DeviceTimeZone(raw, -offset if display.group("sign") == "-" else offset)
    if text.upper() in {"UTC", "GMT", "Z"}:
        return DeviceTimeZone(raw, ZERO)
    match = _POSIX_TZ.match(text)
    if not match:
        raise TimeZoneFormatError(f"unrecognised time zone {raw!r}")
    standard = -_clock_delta(match, "std_")
    if abs(standard) > timedelta(hours=14):
        raise TimeZoneFormatError(f"time zone offset out of range in {raw!r}")
    if not match.group("dst"):
        return DeviceTimeZone(raw, standard)
    if match.group("dst_h") is None:
        shift = timedelta(hours=1)
    elif match.group("dst").upper() == "DST" and match.group("dst_sign") is None:
        shift = _clock_delta(match, "dst_")  # Hikvision: how far the clock goes forward
    else:
        shift = -_clock_delta(match, "dst_") - standard  # POSIX: the summer offset itself
    if not match.group("start"):
        return DeviceTimeZone(raw, standard)
    return DeviceTimeZone(
        raw, standard, shift, _Transition.parse(match.group("start")), _Transition.parse(match.group("end"))
    )


@dataclass(frozen=True)
class DeviceClock:
    local_time: datetime  # aware, in the device's offset at the moment it was read
    utc_offset: timedelta
    timezone: str  # the raw timeZone string, for messages

    def tzinfo(self) -> tzinfo:
        """The zone used to read and write device-local times.

        The parsed timeZone string wins, so times in another DST period convert right; when it
        cannot be parsed, or contradicts the offset the device itself wrote on localTime, the
        fixed offset read now is used.
        """
        try:
            zone = parse_timezone(self.timezone)
        except TimeZoneFormatError:
            return timezone(self.utc_offset)
        if zone.utcoffset(self.local_time.replace(tzinfo=None)) != self.utc_offset:
            return timezone(self.utc_offset)
        return zone


def _split_offset(text: str) -> tuple[str, str | None]:
    """Separate an ISO time from its zone designator: ('...', 'Z'), ('...', '+08:00') or ('...', None)."""
    stripped = text.strip()
    if stripped[-1:] in {"Z", "z"}:
        return stripped[:-1], "Z"
    match = re.search(r"[+-]\d{2}(?::?\d{2})?$", stripped)
    if match and "T" in stripped[: match.start()]:
        return stripped[: match.start()], match.group(0)
    return stripped, None


def parse_iso(text: str) -> tuple[datetime, str | None]:
    """A naive datetime and the designator it carried ('Z', '+08:00' or None)."""
    body, designator = _split_offset(text)
    try:
        naive = datetime.fromisoformat(body)
    except ValueError as exc:
        raise ValueError(f"unparseable time {text!r}") from exc
    return naive.replace(tzinfo=None), designator


def device_clock(local_time_text: str, timezone_text: str) -> DeviceClock:
    """Build a DeviceClock from `/ISAPI/System/time`'s localTime and timeZone."""
    naive, designator = parse_iso(local_time_text)
    if designator not in (None, "Z"):
        aware = datetime.fromisoformat(naive.isoformat() + designator)
        offset = aware.utcoffset() or ZERO
        return DeviceClock(aware, offset, timezone_text)
    # A `Z` here is the same bogus marker as in search answers: the zone string decides.
    try:
        zone: tzinfo = parse_timezone(timezone_text)
    except TimeZoneFormatError:
        zone = UTC
    offset = zone.utcoffset(naive) or ZERO
    return DeviceClock(naive.replace(tzinfo=timezone(offset)), offset, timezone_text)


def device_time_to_utc(text: str, clock: DeviceClock) -> datetime:
    """Read a time from a device answer: `Z` or no designator means device-local, a real offset is honoured."""
    naive, designator = parse_iso(text)
    if designator in (None, "Z"):
        local = naive.replace(tzinfo=clock.tzinfo())
    else:
        local = datetime.fromisoformat(naive.isoformat() + designator)
    return local.astimezone(UTC)


def utc_to_device_text(moment: datetime, clock: DeviceClock) -> str:
    """Write a UTC moment the way recorders expect it in requests: device-local wall time with `Z`."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given; pass an aware UTC datetime")
    return moment.astimezone(clock.tzinfo()).strftime("%Y-%m-%dT%H:%M:%SZ")
