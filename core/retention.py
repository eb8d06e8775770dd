"""What retention deletes, and why: plain decisions over lists of files, with no I/O.

Three kinds of file go, each only once its rows are in ClickHouse, so that no footage is lost
whose analysis is not yet stored (rows may wait in the outbox for hours):

- an export (`exports/<recorder>/<channel>/<date>/<segment>.ps`, the recorder's download): once its
  segment has a `segments` row, `exports_keep_hours` after that row was written (`persisted`);
- a clip (`clips/...mp4` in the video store): once its segment has a `segments` row, when it is
  older than `keep_days` (`age`), or, oldest first, while the store is over its budget (`budget`);
- a thumbnail (`thumbnails/...jpg`): likewise, once an `objects` row names it.

Anything else in the store (files of another kind, files being written) is never deleted, but
counts against the budget. A file whose rows are not persisted is kept whatever its age; when
only such files are left over the budget, the plan says by how much the store stays over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol

from core.names import UnsafeNameError, sanitise_name
from core.store import CLIPS, THUMBNAILS, row_clip_key

What = Literal["export", "clip", "thumbnail"]
Reason = Literal["persisted", "age", "budget"]
GB = 10**9


class FileInfo(Protocol):
    """A file as retention sees it: `blocks.video_store.StoreEntry`, or an `ExportFile`."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> datetime: ...


@dataclass(frozen=True)
class ExportFile:
    key: str  # relative to the exports folder: `<recorder>/<channel>/<date>/<segment>.ps`
    size: int
    mtime: datetime


@dataclass(frozen=True)
class Deletion:
    what: What
    key: str
    size: int
    reason: Reason


@dataclass(frozen=True)
class StorePlan:
    """The store's deletions, oldest first within each reason, and its use before and after them."""

    deletions: list[Deletion] = field(default_factory=list)
    files_before: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    unpersisted: int = 0  # clips and thumbnails kept because their rows are not in ClickHouse yet
    over_budget: int = 0  # bytes the store stays over its budget after the deletions


def store_kind(key: str) -> What | None:
    """`clip` or `thumbnail` for the keys `core.store` makes; None for anything else (never deleted)."""
    if key.startswith(f"{CLIPS}/") and key.endswith(".mp4"):
        return "clip"
    if key.startswith(f"{THUMBNAILS}/") and key.endswith(".jpg"):
        return "thumbnail"
    return None


def plan_store(
    entries: Iterable[FileInfo],
    persisted: set[str],
    now: datetime,
    keep_days: float,
    budget_bytes: int,
) -> StorePlan:
    """Clips and thumbnails to delete: every persisted one older than `keep_days`, then the oldest
    persisted ones until the store's bytes are within `budget_bytes`.

    `persisted` holds the keys whose rows are in ClickHouse: clips of segments with a `segments`
    row, thumbnails named by an `objects` row.
    """
    files = list(entries)
    total = sum(f.size for f in files)
    cutoff = now - timedelta(days=keep_days)
    ours = sorted(
        ((f, kind) for f in files if (kind := store_kind(f.key)) is not None),
        key=lambda fk: (fk[0].mtime, fk[0].key),
    )
    deletable = [(f, kind) for f, kind in ours if f.key in persisted]
    unpersisted = len(ours) - len(deletable)
    deletions = [Deletion(kind, f.key, f.size, "age") for f, kind in deletable if f.mtime < cutoff]
    left = total - sum(d.size for d in deletions)
    for f, kind in deletable:
        if left <= budget_bytes:
            break
        if f.mtime >= cutoff:
            deletions.append(Deletion(kind, f.key, f.size, "budget"))
            left -= f.size
    return StorePlan(deletions, len(files), total, left, unpersisted, max(0, left - budget_bytes))


def plan_exports(
    exports: Iterable[FileInfo], persisted_at: Mapping[str, datetime], now: datetime, keep_hours: float
) -> list[Deletion]:
    """Exports whose segment was persisted (`persisted_at`: export key -> when its `segments` row
    was written) at least `keep_hours` ago, oldest first. An export with no row stays."""
    cutoff = now - timedelta(hours=keep_hours)
    return [
        Deletion("export", f.key, f.size, "persisted")
        for f in sorted(exports, key=lambda f: (f.mtime, f.key))
        if f.key.endswith(".ps") and (at := persisted_at.get(f.key)) is not None and at <= cutoff
    ]


def export_key(recorder: str, channel: int, segment: str, start: datetime) -> str:
    """An export's place under the exports folder, from its `segments` row: the path the
    download went to (`blocks.isapi.naming.segment_path`). UnsafeNameError for a name no path can take."""
    return f"{sanitise_name(recorder)}/{int(channel)}/{start.astimezone(UTC):%Y-%m-%d}/{sanitise_name(segment)}.ps"


def persisted_files(
    segments: Iterable[tuple[str, int, str, datetime, datetime]], thumbnails: Iterable[str]
) -> tuple[set[str], dict[str, datetime]]:
    """From ClickHouse's rows, the store keys whose rows are persisted (each segment's clip, each
    thumbnail an object names) and, per export key, when its segment's row was written.

    `segments`: (recorder, channel, segment, start, persisted at), one per segment."""
    store = set(thumbnails)
    exports: dict[str, datetime] = {}
    for recorder, channel, segment, start, at in segments:
        try:
            clip, export = (
                row_clip_key(recorder, channel, segment, start),
                export_key(recorder, channel, segment, start),
            )
        except UnsafeNameError:  # a name no file could have been written under
            continue
        store.add(clip)
        exports[export] = max(at, exports.get(export, at))
    return store, exports


def oldest_day(keys: Iterable[str]) -> datetime | None:
    """Midnight UTC of the oldest `<date>` folder among keys ending `.../<YYYY-MM-DD>/<file>`: the rows
    of segments that started before it have no file left. None when a key has no such folder."""
    first: date | None = None
    for key in keys:
        parts = key.split("/")
        try:
            day = date.fromisoformat(parts[-2] if len(parts) >= 2 else "")
        except ValueError:
            return None
        first = day if first is None or day < first else first
    if first is None:
        return None
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def summary_rows(deletions: Iterable[Deletion]) -> list[dict[str, object]]:
    """Files and bytes deleted per kind and reason: the run's table artifact."""
    totals: dict[tuple[str, str], list[int]] = {}
    for d in deletions:
        count = totals.setdefault((d.what, d.reason), [0, 0])
        count[0] += 1
        count[1] += d.size
    return [
        {"what": what, "reason": reason, "files": files, "MB": round(size / 10**6, 3)}
        for (what, reason), (files, size) in sorted(totals.items())
    ]
