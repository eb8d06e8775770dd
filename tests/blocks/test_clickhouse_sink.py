"""ClickHouseSink against a real gateway process: migrations, token deduplication, hourly summary."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from blocks.clickhouse import ClickHouseSink, ClickHouseUnavailable
from blocks.clickhouse_schema import HOURLY_SUMMARY_SQL, MIGRATIONS, DetectionRow, columns, row_values
from tests.gateway_process import Gateway

PASSWORD = "sink-" + uuid.uuid4().hex
T0 = datetime(2024, 5, 6, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    with Gateway(tmp_path_factory.mktemp("sink") / "clickhouse", PASSWORD) as gw:
        yield gw


@pytest.fixture
def sink(gateway) -> ClickHouseSink:
    """A fresh database, migrated."""
    sink = gateway.sink(f"nvr_{uuid.uuid4().hex[:8]}")
    with sink.connect() as writer:
        writer.migrate()
    return sink


def detection_rows(segment: str, start: datetime, frames: int, labels: list[str]) -> list[DetectionRow]:
    """Five ranks per frame, rank 1 cycling through `labels`; scores known for the max check."""
    now = datetime.now(UTC)
    rows = []
    for i in range(frames):
        for rank in range(1, 6):
            label = labels[i % len(labels)] if rank == 1 else f"other-{rank}"
            rows.append(DetectionRow(
                recorder="nvr-t", channel=1, segment=segment, frame_time=start + timedelta(seconds=i),
                model="m", model_version=1, rank=rank, label=label,
                score=round(0.9 - rank / 10 + i / 1000, 3), inserted_at=now, version_key="",
            ))  # fmt: skip
    return rows


def expected_summary(rows: list[DetectionRow]) -> dict[tuple, tuple[int, float]]:
    out: dict[tuple, tuple[int, float]] = {}
    for r in rows:
        if r.rank != 1:
            continue
        hour = r.frame_time.replace(minute=0, second=0, microsecond=0)
        key = (r.recorder, r.channel, hour.replace(tzinfo=None), r.label)
        n, best = out.get(key, (0, 0.0))
        out[key] = (n + 1, max(best, r.score))
    return out


def summary(sink: ClickHouseSink) -> dict[tuple, tuple[int, float]]:
    with sink.connect() as ch:
        rows = ch.query(HOURLY_SUMMARY_SQL)
    return {(r[0], r[1], r[2].replace(tzinfo=None), r[5]): (r[6], round(r[7], 3)) for r in rows}


def test_migrate_twice_is_idempotent(gateway):
    sink = gateway.sink(f"nvr_{uuid.uuid4().hex[:8]}")
    with sink.connect() as writer:
        assert writer.migrate() == [m.name for m in MIGRATIONS]
        assert writer.migrate() == []
        tables = {
            r[0]
            for r in writer.query(
                "SELECT name FROM system.tables WHERE database = {d:String}", {"d": sink.database}
            )
        }
        versions = writer.query("SELECT version FROM {db}.schema_migrations ORDER BY version")
    assert {
        "segments",
        "detections",
        "detections_hourly",
        "detections_hourly_mv",
        "schema_migrations",
    } <= tables
    assert [v[0] for v in versions] == [m.version for m in MIGRATIONS]


def test_migration_2_summarises_rows_stored_before_it_once(gateway):
    """Upgrading a database that has detections: the summary starts complete, and a re-run adds nothing."""
    sink = gateway.sink(f"nvr_{uuid.uuid4().hex[:8]}")
    old = detection_rows("seg-old", T0, 30, ["cat", "dog"])
    with sink.connect() as writer:
        # A database at version 1, as an earlier release left it.
        writer._client.command(f"CREATE DATABASE {sink.database}")
        writer._client.command(
            f"CREATE TABLE {sink.database}.schema_migrations (version UInt32, name String, "
            "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        for statement in MIGRATIONS[0].statements:
            writer._client.command(statement.replace("{db}", sink.database))
        writer._client.insert(
            f"{sink.database}.schema_migrations", [[1, MIGRATIONS[0].name]], column_names=["version", "name"]
        )
        # Rows as version 1 stored them: without the version_key column of migration 3.
        old_columns = [c for c in columns(DetectionRow) if c != "version_key"]
        writer._client.insert(
            f"{sink.database}.detections",
            [row_values(r)[: len(old_columns)] for r in old],
            column_names=old_columns,
        )
        assert writer.migrate() == [m.name for m in MIGRATIONS[1:]]
        assert writer.migrate() == []
    assert summary(sink) == expected_summary(old)
    new = detection_rows("seg-new", T0 + timedelta(minutes=30), 10, ["cat"])
    with sink.connect() as writer:
        writer.insert("detections", new, "new")
    assert summary(sink) == expected_summary(old + new)


def test_same_token_twice_keeps_one_copy(sink):
    rows = detection_rows("seg-1", T0, 20, ["cat"])
    with sink.connect() as writer:
        assert writer.insert("detections", rows, "detections/seg-1") == len(rows)
        writer.insert("detections", rows, "detections/seg-1")
        # Count without FINAL: the token, not a merge, has to keep the second copy out.
        assert writer.query("SELECT count() FROM {db}.detections")[0][0] == len(rows)
        writer.insert("detections", rows, "detections/seg-1-other-token")
        # A different token is another insert; only the ReplacingMergeTree key folds it.
        assert writer.query("SELECT count() FROM {db}.detections")[0][0] == 2 * len(rows)
        assert writer.query("SELECT count() FROM {db}.detections FINAL")[0][0] == len(rows)


def test_hourly_summary_exact_after_repeated_insert(sink):
    first = detection_rows("seg-1", T0 - timedelta(seconds=10), 20, ["cat", "dog"])  # across an hour boundary
    second = detection_rows("seg-2", T0 + timedelta(hours=2), 20, ["cat", "dog"])
    # Two segments of one hour whose hourly aggregates are identical: the summary's own
    # deduplication must not take the second for a repeat of the first.
    third = detection_rows("seg-3", T0 + timedelta(hours=5), 10, ["cat"])
    twin = detection_rows("seg-4", T0 + timedelta(hours=5, seconds=20), 10, ["cat"])
    inserts = [
        (first, "a"),
        (first, "a"),
        (second, "b"),
        (first, "a"),
        (third, "c"),
        (twin, "d"),
        (twin, "d"),
    ]
    with sink.connect() as writer:
        for rows, token in inserts:
            writer.insert("detections", rows, token)
    want = expected_summary(first + second + third + twin)
    assert want[("nvr-t", 1, (T0 + timedelta(hours=5)).replace(tzinfo=None), "cat")][0] == 20
    assert summary(sink) == want


def test_unavailable_is_raised_fast(tmp_path):
    gw = Gateway(tmp_path / "clickhouse", PASSWORD)
    gw.start()
    sink = gw.sink("nvr_down")
    writer = sink.connect()
    try:
        gw.stop()
        began = time.monotonic()
        with pytest.raises(ClickHouseUnavailable):
            writer.insert("detections", detection_rows("s", T0, 1, ["cat"]), "t")
        assert time.monotonic() - began < 3
    finally:
        writer.close()
    began = time.monotonic()
    with pytest.raises(ClickHouseUnavailable, match="unreachable"):
        sink.connect()
    assert time.monotonic() - began < 3
