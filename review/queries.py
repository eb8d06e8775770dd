"""What a request asks for, read from its query string: search filters, paging, object references.

Pure: no I/O, so every rule is tested directly. A bad value is a `BadQuery`, shown to the user
(400), never a server error.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from blocks.clickhouse import ObjectFilter
from blocks.clickhouse_schema import ObjectRow

PER_PAGE = 24
MAX_PER_PAGE = 100
MAX_PAGE = 10_000  # deeper than any operator pages; bounds the OFFSET the server must skip
MAX_TEXT = 200  # longest recorder or label name taken
MAX_REF = 1024
MAX_HOURLY_RANGE = timedelta(days=93)
FILTER_FIELDS = ("recorder", "channel", "label", "start", "end", "min_score")


class BadQuery(ValueError):
    """A query string value that is not what its field takes; the message names the field."""


def parse_time(value: str, name: str) -> datetime:
    """ISO 8601; a time without a time zone is UTC (the app shows and takes UTC)."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name}: not an ISO 8601 time (e.g. 2026-11-01T02:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_TEXT:
        raise BadQuery(f"{name}: longer than {MAX_TEXT} characters")
    return value


def _int(params: Mapping[str, str], name: str, low: int, high: int, default: int | None) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name}: not a whole number") from None
    if not low <= value <= high:
        raise BadQuery(f"{name}: must be between {low} and {high}")
    return value


def parse_filter(params: Mapping[str, str]) -> ObjectFilter:
    """recorder, channel, label, start, end (ISO, UTC), min_score (0..1); empty fields mean any."""
    start = parse_time(params["start"], "start") if params.get("start", "").strip() else None
    end = parse_time(params["end"], "end") if params.get("end", "").strip() else None
    if start and end and end <= start:
        raise BadQuery("end: must be after start")
    raw_score = params.get("min_score", "").strip()
    try:
        min_score = float(raw_score) if raw_score else 0.0
    except ValueError:
        raise BadQuery("min_score: not a number") from None
    if not 0.0 <= min_score <= 1.0:  # also refuses NaN
        raise BadQuery("min_score: must be between 0 and 1")
    return ObjectFilter(
        recorder=_text(params, "recorder"),
        channel=_int(params, "channel", 0, 65535, None),
        label=_text(params, "label"),
        start=start,
        end=end,
        min_score=min_score,
    )


@dataclass(frozen=True)
class Paging:
    page: int  # from 1
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def parse_paging(params: Mapping[str, str]) -> Paging:
    page = _int(params, "page", 1, MAX_PAGE, 1)
    per_page = _int(params, "per_page", 1, MAX_PER_PAGE, PER_PAGE)
    assert page is not None and per_page is not None
    return Paging(page, per_page)


def parse_day(params: Mapping[str, str], today: date) -> date:
    raw = params.get("day", "").strip()
    if not raw:
        return today
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadQuery("day: not a date (YYYY-MM-DD)") from None


def hourly_filter(params: Mapping[str, str], now: datetime) -> ObjectFilter:
    """The filter of an hourly-counts request: the last 24 hours unless a range is given; at most 93 days."""
    where = parse_filter(params)
    end = where.end or now
    start = where.start or end - timedelta(days=1)
    if end <= start:
        raise BadQuery("end: must be after start")
    if end - start > MAX_HOURLY_RANGE:
        raise BadQuery(f"start, end: at most {MAX_HOURLY_RANGE.days} days apart")
    return ObjectFilter(where.recorder, where.channel, where.label, start, end)


def query_string(where: ObjectFilter, **extra: Any) -> str:
    """The query string that asks for `where` again (for links to other pages of a search)."""
    values: dict[str, Any] = {}
    for name in FILTER_FIELDS:
        value = getattr(where, name)
        if isinstance(value, datetime):
            value = iso(value)
        if value is not None and not (name == "min_score" and not value):
            values[name] = value
    return urlencode(values | {k: v for k, v in extra.items() if v is not None})


def iso(moment: datetime) -> str:
    """A time as the app writes it: ISO 8601 in UTC with a Z, to the millisecond when it has one."""
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def object_ref(row: ObjectRow) -> str:
    """An object's id in URLs: its table key, (recorder, channel, segment, object_id), as URL-safe text."""
    key = json.dumps([row.recorder, row.channel, row.segment, row.object_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def parse_ref(ref: str) -> tuple[str, int, str, str]:
    """The table key of an object id; BadQuery when it is not one."""
    if len(ref) > MAX_REF:
        raise BadQuery("object id too long")
    try:
        key = json.loads(base64.urlsafe_b64decode(ref + "=" * (-len(ref) % 4)))
    except (binascii.Error, ValueError):
        raise BadQuery("not an object id") from None
    if (
        not isinstance(key, list)
        or len(key) != 4
        or not all(isinstance(part, str) for part in (key[0], key[2], key[3]))
        or not isinstance(key[1], int)
        or isinstance(key[1], bool)
    ):
        raise BadQuery("not an object id")
    return key[0], key[1], key[2], key[3]


def store_url(key: str) -> str:
    """Where the app serves a file of the video store."""
    return "/store/" + quote(key) if key else ""


def object_json(row: ObjectRow) -> dict[str, Any]:
    """An object as the JSON API gives it: its columns, its id and where to see and play it."""
    data = {k: iso(v) if isinstance(v, datetime) else v for k, v in asdict(row).items()}
    ref = object_ref(row)
    return data | {
        "id": ref,
        "page_url": f"/objects/{ref}",
        "clip_url": store_url(row.clip),
        "thumbnail_url": store_url(row.thumbnail),
        "duration_s": round((row.end - row.start).total_seconds(), 3),
    }
