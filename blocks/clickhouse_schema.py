"""nvrflow's ClickHouse schema: ordered, idempotent migrations, and the typed rows of its tables.

A migration only ever adds: tables, columns, views. Each statement is safe to run
again (IF NOT EXISTS), so a migration interrupted half-way is simply applied again.
The row types below are the tables' columns as Python sees them: insert column lists,
the outbox's datetime handling and the report's columns all derive from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, get_type_hints


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


# Inserts carry insert_deduplication_token; non-replicated tables honour it only with a
# deduplication window. ReplacingMergeTree on the natural key is the net under it.
_DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "segments and detections",
        (
            """CREATE TABLE IF NOT EXISTS {db}.segments (
                recorder LowCardinality(String),
                site LowCardinality(String),
                channel UInt16,
                segment String,
                start DateTime64(3, 'UTC'),
                end DateTime64(3, 'UTC'),
                duration_s Float64,
                bytes UInt64,
                source_codec LowCardinality(String),
                transcode_mode LowCardinality(String),
                output_path String,
                flow_run_id String,
                exported_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(exported_at)
            ORDER BY (recorder, channel, segment) """
            + _DEDUP,
            """CREATE TABLE IF NOT EXISTS {db}.detections (
                recorder LowCardinality(String),
                channel UInt16,
                segment String,
                frame_time DateTime64(3, 'UTC'),
                model LowCardinality(String),
                model_version UInt32,
                rank UInt8,
                label LowCardinality(String),
                score Float32,
                inserted_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(inserted_at)
            ORDER BY (recorder, channel, segment, frame_time, model, rank) """
            + _DEDUP,
        ),
    ),
    Migration(
        2,
        "hourly detections summary",
        (
            # The view counts inserted blocks, not merged rows. A repeated token still reaches the
            # view, with a token derived from it (deduplicate_blocks_in_dependent_materialized_views),
            # so the target needs its own deduplication window or it would count the block twice.
            """CREATE TABLE IF NOT EXISTS {db}.detections_hourly (
                recorder LowCardinality(String),
                channel UInt16,
                hour DateTime('UTC'),
                model LowCardinality(String),
                model_version UInt32,
                label LowCardinality(String),
                frames SimpleAggregateFunction(sum, UInt64),
                max_score SimpleAggregateFunction(max, Float32)
            ) ENGINE = AggregatingMergeTree
            ORDER BY (recorder, channel, hour, model, model_version, label) """
            + _DEDUP,
            # Rows stored before this migration, once: a re-run finds the summary filled and adds
            # nothing. Run migrations while no pipeline writes (the stack does, before its worker).
            """INSERT INTO {db}.detections_hourly
            SELECT recorder, channel, toStartOfHour(frame_time) AS hour, model, model_version, label,
                   toUInt64(count()) AS frames, max(score) AS max_score
            FROM {db}.detections FINAL
            WHERE rank = 1 AND (SELECT count() FROM {db}.detections_hourly) = 0
            GROUP BY recorder, channel, hour, model, model_version, label""",
            """CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.detections_hourly_mv TO {db}.detections_hourly AS
            SELECT recorder, channel, toStartOfHour(frame_time) AS hour, model, model_version, label,
                   toUInt64(count()) AS frames, max(score) AS max_score
            FROM {db}.detections
            WHERE rank = 1
            GROUP BY recorder, channel, hour, model, model_version, label""",
        ),
    ),
    # Each row carries the token of the insert that wrote it, so that a segment's new version
    # (re-recorded footage, other options, another model) can replace the rows of the old one.
    Migration(
        3,
        "version_key on segments and detections",
        (
            "ALTER TABLE {db}.segments ADD COLUMN IF NOT EXISTS version_key String DEFAULT ''",
            "ALTER TABLE {db}.detections ADD COLUMN IF NOT EXISTS version_key String DEFAULT ''",
        ),
    ),
    # The ledger: one row per recorder, channel and hour whose every segment was persisted.
    # `backfill` runs the hours that have no row.
    Migration(
        4,
        "windows ledger",
        (
            """CREATE TABLE IF NOT EXISTS {db}.windows (
                recorder LowCardinality(String),
                channel UInt16,
                hour DateTime('UTC'),
                segments UInt32,
                flow_run_id String,
                completed_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(completed_at)
            ORDER BY (recorder, channel, hour) """
            + _DEDUP,
        ),
    ),
    # A detector's answers: its boxes per sampled frame, and the objects they were tracked into
    # (what operators search), with per-hour counts for dashboards.
    Migration(
        5,
        "detector boxes, tracked objects, hourly object counts",
        (
            """CREATE TABLE IF NOT EXISTS {db}.boxes (
                recorder LowCardinality(String),
                channel UInt16,
                segment String,
                frame_time DateTime64(3, 'UTC'),
                model LowCardinality(String),
                model_version UInt32,
                label LowCardinality(String),
                score Float32,
                x0 Float32, y0 Float32, x1 Float32, y1 Float32,
                inserted_at DateTime64(3, 'UTC'),
                version_key String
            ) ENGINE = ReplacingMergeTree(inserted_at)
            ORDER BY (recorder, channel, segment, frame_time, model, label, x0, y0) """
            + _DEDUP,
            """CREATE TABLE IF NOT EXISTS {db}.objects (
                recorder LowCardinality(String),
                site LowCardinality(String),
                channel UInt16,
                segment String,
                object_id String,
                label LowCardinality(String),
                start DateTime64(3, 'UTC'),
                end DateTime64(3, 'UTC'),
                best_score Float32,
                best_time DateTime64(3, 'UTC'),
                x0 Float32, y0 Float32, x1 Float32, y1 Float32,
                frame_width UInt16,
                frame_height UInt16,
                frames UInt32,
                clip String,
                clip_offset_s Float32,
                thumbnail String,
                model LowCardinality(String),
                model_version UInt32,
                inserted_at DateTime64(3, 'UTC'),
                version_key String
            ) ENGINE = ReplacingMergeTree(inserted_at)
            ORDER BY (recorder, channel, segment, object_id) """
            + _DEDUP,
            """CREATE TABLE IF NOT EXISTS {db}.objects_hourly (
                recorder LowCardinality(String),
                channel UInt16,
                hour DateTime('UTC'),
                label LowCardinality(String),
                objects SimpleAggregateFunction(sum, UInt64),
                best_score SimpleAggregateFunction(max, Float32)
            ) ENGINE = AggregatingMergeTree
            ORDER BY (recorder, channel, hour, label) """
            + _DEDUP,
            """CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.objects_hourly_mv TO {db}.objects_hourly AS
            SELECT recorder, channel, toStartOfHour(start) AS hour, label,
                   toUInt64(count()) AS objects, max(best_score) AS best_score
            FROM {db}.objects
            GROUP BY recorder, channel, hour, label""",
        ),
    ),
    # What retention deleted (flows/retention.py): an export, a clip or a thumbnail, why, and by
    # which run; the review app tells a deleted clip from a missing one by it.
    Migration(
        6,
        "deletions by retention",
        (
            """CREATE TABLE IF NOT EXISTS {db}.deletions (
                what LowCardinality(String),
                key String,
                bytes UInt64,
                reason LowCardinality(String),
                deleted_at DateTime64(3, 'UTC'),
                host LowCardinality(String),
                flow_run_id String
            ) ENGINE = ReplacingMergeTree
            ORDER BY (what, key, deleted_at) """
            + _DEDUP,
        ),
    ),
)

# How to read the summary: partial rows of one key are folded by merges, so always aggregate.
HOURLY_SUMMARY_SQL = """
SELECT recorder, channel, hour, model, model_version, label, sum(frames) AS frames, max(max_score) AS max_score
FROM {db}.detections_hourly
GROUP BY recorder, channel, hour, model, model_version, label
ORDER BY recorder, channel, hour, frames DESC, label
"""


# Objects per hour, label and channel (dashboards): aggregate, as above.
HOURLY_OBJECTS_SQL = """
SELECT recorder, channel, hour, label, sum(objects) AS objects, max(best_score) AS best_score
FROM {db}.objects_hourly
GROUP BY recorder, channel, hour, label
ORDER BY recorder, channel, hour, label
"""


@dataclass(frozen=True)
class SegmentRow:
    """One row of `segments`: an exported (or ingested) segment and its MP4."""

    TABLE: ClassVar[str] = "segments"
    recorder: str
    site: str
    channel: int
    segment: str
    start: datetime
    end: datetime
    duration_s: float
    bytes: int
    source_codec: str
    transcode_mode: str
    output_path: str
    flow_run_id: str
    exported_at: datetime
    version_key: str


@dataclass(frozen=True)
class DetectionRow:
    """One row of `detections`: a sampled frame's label at one rank."""

    TABLE: ClassVar[str] = "detections"
    recorder: str
    channel: int
    segment: str
    frame_time: datetime
    model: str
    model_version: int
    rank: int
    label: str
    score: float
    inserted_at: datetime
    version_key: str


@dataclass(frozen=True)
class WindowRow:
    """One row of `windows`, the ledger: a recorder's channel over an hour, complete."""

    TABLE: ClassVar[str] = "windows"
    recorder: str
    channel: int
    hour: datetime
    segments: int
    flow_run_id: str
    completed_at: datetime


@dataclass(frozen=True)
class BoxRow:
    """One row of `boxes`: a detector's box in one sampled frame, in frame pixels."""

    TABLE: ClassVar[str] = "boxes"
    recorder: str
    channel: int
    segment: str
    frame_time: datetime
    model: str
    model_version: int
    label: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float
    inserted_at: datetime
    version_key: str


@dataclass(frozen=True)
class ObjectRow:
    """One row of `objects`: a person or vehicle tracked through a segment's frames.

    `clip` and `thumbnail` are paths in the video store (the MP4 and the JPEG of the best frame
    with its box drawn); the clip plays the object from `clip_offset_s`. The box is the best
    frame's, in pixels of a `frame_width` x `frame_height` frame.
    """

    TABLE: ClassVar[str] = "objects"
    recorder: str
    site: str
    channel: int
    segment: str
    object_id: str
    label: str
    start: datetime
    end: datetime
    best_score: float
    best_time: datetime
    x0: float
    y0: float
    x1: float
    y1: float
    frame_width: int
    frame_height: int
    frames: int
    clip: str
    clip_offset_s: float
    thumbnail: str
    model: str
    model_version: int
    inserted_at: datetime
    version_key: str


@dataclass(frozen=True)
class DeletionRow:
    """One row of `deletions`: a file retention deleted.

    `what` is `export`, `clip` or `thumbnail`; `key` the file's key in the video store (a clip, a
    thumbnail) or its path on `host` (an export); `reason` is `persisted` (an export whose segment
    is in ClickHouse), `age` (older than the run's keep_days) or `budget` (the store was over it).
    """

    TABLE: ClassVar[str] = "deletions"
    what: str
    key: str
    bytes: int
    reason: str
    deleted_at: datetime
    host: str
    flow_run_id: str


Row = SegmentRow | DetectionRow | WindowRow | BoxRow | ObjectRow | DeletionRow
ROW_TYPES: dict[str, type[Row]] = {
    t.TABLE: t for t in (SegmentRow, DetectionRow, WindowRow, BoxRow, ObjectRow, DeletionRow)
}


def columns(row_type: type[Row]) -> list[str]:
    """Insert columns of a table, in the order of its row type's fields."""
    return [f.name for f in fields(row_type)]


def datetime_columns(row_type: type[Row]) -> set[str]:
    hints = get_type_hints(row_type)
    return {f.name for f in fields(row_type) if hints[f.name] is datetime}


def row_values(row: Row) -> list[Any]:
    return [getattr(row, name) for name in columns(type(row))]


def row_to_json(row: Row) -> dict[str, Any]:
    """A row as JSON-safe values (datetimes as ISO text), for the outbox."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(row).items()}


def row_from_json(table: str, data: dict[str, Any]) -> Row:
    row_type = ROW_TYPES[table]
    times = datetime_columns(row_type)
    # Rows kept before migration 3 have no version_key.
    values: dict[str, Any] = {"version_key": ""} if "version_key" in columns(row_type) else {}
    values |= {k: datetime.fromisoformat(v) if k in times else v for k, v in data.items()}
    return row_type(**values)
