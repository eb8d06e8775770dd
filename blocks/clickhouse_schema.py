"""nvrflow's ClickHouse schema as ordered, idempotent migrations.

A migration only ever adds: tables, columns, views. Each statement is safe to run
again (IF NOT EXISTS), so a migration interrupted half-way is simply applied again.
"""

from __future__ import annotations

from dataclasses import dataclass


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
)

# How to read the summary: partial rows of one key are folded by merges, so always aggregate.
HOURLY_SUMMARY_SQL = """
SELECT recorder, channel, hour, model, model_version, label, sum(frames) AS frames, max(max_score) AS max_score
FROM {db}.detections_hourly
GROUP BY recorder, channel, hour, model, model_version, label
ORDER BY recorder, channel, hour, frames DESC, label
"""

# fmt: off
TABLE_COLUMNS: dict[str, list[str]] = {
    "segments": [
        "recorder", "site", "channel", "segment", "start", "end", "duration_s", "bytes",
        "source_codec", "transcode_mode", "output_path", "flow_run_id", "exported_at",
    ],
    "detections": [
        "recorder", "channel", "segment", "frame_time", "model", "model_version", "rank", "label",
        "score", "inserted_at",
    ],
}
# fmt: on
