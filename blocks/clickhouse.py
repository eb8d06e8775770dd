"""ClickHouse sink block: the only place that speaks ClickHouse (through clickhouse-connect).

Every statement nvrflow sends lives here: migrations, the inserts of a segment's rows,
and the reads behind the report, the demo's summary, the review app and retention. Values always travel
as bound parameters (`{name:Type}`), never inside the SQL text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.clickhouse_schema import MIGRATIONS, DeletionRow, ObjectRow, SegmentRow, columns, row_values
from blocks.clickhouse_schema import Row as Row
from core.errors import ServiceError

T = TypeVar("T")


class ClickHouseUnavailable(ServiceError):
    """ClickHouse could not be reached or did not answer: worth retrying; the rows may go to the outbox."""

    retryable = True


class ClickHouseRefused(ServiceError):
    """ClickHouse answered with an error (authentication, a missing table, bad data): retrying cannot help."""


@dataclass(frozen=True)
class Batch:
    """One insert: rows of one table from one segment, under a deduplication token.

    `scope` (recorder, channel, segment) and `token` let a new version of a segment replace
    the rows of an older one: rows of the same scope written under another token go.
    """

    table: str
    token: str
    rows: tuple[Row, ...]
    scope: tuple[str, int, str] | None = None


@dataclass(frozen=True)
class SegmentSummary:
    recorder: str
    segments: int
    seconds: float
    remuxed: int
    top_labels: list[tuple[str, int]] = field(default_factory=list)  # a classifier's, by frames
    objects: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # a detector's, per channel


@dataclass(frozen=True)
class ObjectFilter:
    """Which tracked objects a search wants; None (or 0 for the score) means any."""

    recorder: str | None = None
    channel: int | None = None
    label: str | None = None
    start: datetime | None = None  # objects seen at or after (their end is at or after it)
    end: datetime | None = None  # objects seen before (their start is before it)
    min_score: float = 0.0

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause over `objects` and its parameters."""
        conditions, params = self.keys()
        if self.start is not None:
            conditions.append("end >= {start:DateTime64(3, 'UTC')}")
            params |= _utc_naive(start=self.start)
        if self.end is not None:
            conditions.append("start < {end:DateTime64(3, 'UTC')}")
            params |= _utc_naive(end=self.end)
        if self.min_score > 0:
            conditions.append("best_score >= {min_score:Float32}")
            params["min_score"] = float(self.min_score)
        return " AND ".join(conditions) or "1", params

    def keys(self) -> tuple[list[str], dict[str, Any]]:
        """The conditions on recorder, channel and label alone (columns of `objects_hourly` too)."""
        conditions: list[str] = []
        params: dict[str, Any] = {}
        if self.recorder is not None:
            conditions.append("recorder = {recorder:String}")
            params["recorder"] = self.recorder
        if self.channel is not None:
            conditions.append("channel = {channel:UInt16}")
            params["channel"] = int(self.channel)
        if self.label is not None:
            conditions.append("label = {label:String}")
            params["label"] = self.label
        return conditions, params


@dataclass(frozen=True)
class HourlyObjects:
    """Objects of one label that started in one hour on one channel, and the best score among them."""

    recorder: str
    channel: int
    hour: datetime
    label: str
    objects: int
    best_score: float


class ClickHouseSink(Block):
    """Where segment metadata and detections are stored."""

    _block_type_name = "ClickHouse Sink"
    _description = "A ClickHouse server (HTTP interface) and database for nvrflow's tables."

    url: str = Field(default="http://127.0.0.1:8123", description="HTTP(S) address of the server.")
    username: str = "default"
    password: SecretStr = Field(default=SecretStr(""))
    database: str = "nvrflow"
    connect_timeout: float = Field(default=5.0, gt=0)
    send_receive_timeout: float = Field(default=60.0, gt=0)
    compress: bool = False

    def connect(self) -> ClickHouseWriter:
        """A client for this server; use it as a context manager."""
        return ClickHouseWriter(self)


class ClickHouseWriter:
    """One connection to the sink; create per task, close when done."""

    def __init__(self, sink: ClickHouseSink):
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        parts = urlsplit(sink.url)
        self.database = sink.database
        self.url = sink.url
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                secure=parts.scheme == "https",
                username=sink.username,
                password=sink.password.get_secret_value(),
                connect_timeout=sink.connect_timeout,
                send_receive_timeout=sink.send_receive_timeout,
                compress=sink.compress,
                autogenerate_session_id=False,
            )
        except OperationalError as exc:
            raise ClickHouseUnavailable(f"ClickHouse at {sink.url} unreachable: {_first_line(exc)}") from exc
        except DatabaseError as exc:  # the server answered: a wrong password, a missing database
            raise ClickHouseRefused(f"ClickHouse at {sink.url} refused: {_first_line(exc)}") from exc

    def __enter__(self) -> ClickHouseWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _guard(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            return call(*args, **kwargs)
        except OperationalError as exc:
            raise ClickHouseUnavailable(f"ClickHouse at {self.url} unavailable: {_first_line(exc)}") from exc
        except DatabaseError as exc:
            raise ClickHouseRefused(f"ClickHouse at {self.url} refused: {_first_line(exc)}") from exc

    def _sql(self, sql: str) -> str:
        return sql.replace("{db}", self.database)

    def migrate(self) -> list[str]:
        """Apply the migrations not applied yet, in order; returns the names applied now."""
        self._guard(self._client.command, f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._guard(
            self._client.command,
            self._sql(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
                "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                "ENGINE = ReplacingMergeTree ORDER BY version"
            ),
        )
        done = {row[0] for row in self.query("SELECT version FROM {db}.schema_migrations")}
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                self._guard(self._client.command, self._sql(statement))
            self._guard(
                self._client.insert,
                f"{self.database}.schema_migrations",
                [[migration.version, migration.name]],
                column_names=["version", "name"],
            )
            applied.append(migration.name)
        return applied

    def schema_version(self) -> int:
        """The highest migration applied (0 on a database never migrated)."""
        rows = self.query("SELECT max(version) FROM {db}.schema_migrations")
        return int(rows[0][0] or 0)

    # -- writing -------------------------------------------------------------------------------

    def insert(self, table: str, rows: Sequence[Row], token: str) -> int:
        """Insert one batch; a repeated `token` is deduplicated by the server, so retries are safe."""
        if not rows:
            return 0
        self._guard(
            self._client.insert,
            f"{self.database}.{table}",
            [row_values(row) for row in rows],
            column_names=columns(type(rows[0])),
            # A deduplicated insert must not reach materialized views either (the hourly summary).
            settings={
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )
        return len(rows)

    def write(self, batch: Batch) -> int:
        """Insert a batch so that its segment's rows are exactly its rows, whatever came before.

        1. insert under the batch's token (a retry of the same batch is deduplicated);
        2. if the batch's rows are not all there (nor under another segment name of the same
           source: an ingested file renamed), an earlier write under this token was
           deduplicated after a newer version had replaced its rows: insert again under a
           fresh token;
        3. delete the rows of the same segment written under any other token (an older
           version of the segment).
        Each step is safe to repeat, so a task retried after a crash anywhere ends the same.
        """
        self.insert(batch.table, batch.rows, batch.token)
        if batch.scope is None:
            return len(batch.rows)
        recorder, channel, segment = batch.scope
        params = {"recorder": recorder, "channel": channel, "segment": segment, "token": batch.token}
        source = "recorder = {recorder:String} AND channel = {channel:UInt16}"
        scope = source + " AND segment = {segment:String}"
        table = f"{{db}}.{batch.table}"
        # The wider count runs only when the narrow one comes up short, which a first write or a
        # retry never does.
        if batch.rows and self._count(table, scope, "=", params) < len(batch.rows):
            if self._count(table, source, "=", params) < len(batch.rows):
                self.command(f"DELETE FROM {table} WHERE {scope} AND version_key = {{token:String}}", params)
                self.insert(batch.table, batch.rows, f"{batch.token}/again/{uuid.uuid4().hex}")
        if self._count(table, scope, "!=", params):
            self.command(f"DELETE FROM {table} WHERE {scope} AND version_key != {{token:String}}", params)
        return len(batch.rows)

    def _count(self, table: str, where: str, token_is: str, params: dict[str, Any]) -> int:
        """Rows of `table` matching `where` whose version_key is (`=`) or is not (`!=`) the token."""
        sql = f"SELECT count() FROM {table} WHERE {where} AND version_key {token_is} {{token:String}}"
        return int(self.query(sql, params)[0][0])

    # -- reading -------------------------------------------------------------------------------

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        """Run a read query; `{db}` in the SQL names the sink's database. Every datetime comes back
        aware, in UTC (clickhouse-connect gives naive ones for some column types)."""
        result = self._guard(self._client.query, self._sql(sql), parameters=parameters or {})
        return [tuple(_as_utc(v) if isinstance(v, datetime) else v for v in r) for r in result.result_rows]

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self._guard(self._client.command, self._sql(sql), parameters=parameters or {})

    def segments_overlapping(self, start: datetime, end: datetime) -> list[SegmentRow]:
        """Every segment overlapping [start, end), by recorder, channel and start."""
        names = columns(SegmentRow)
        rows = self.query(
            f"SELECT {', '.join(names)} FROM {{db}}.segments FINAL "
            "WHERE start < {end:DateTime64(3, 'UTC')} AND end > {start:DateTime64(3, 'UTC')} "
            "ORDER BY recorder, channel, start",
            _utc_naive(start=start, end=end),
        )
        return [SegmentRow(**dict(zip(names, row, strict=True))) for row in rows]

    def top1_frames_between(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, int, datetime, str, float]]:
        """(recorder, channel, frame time, label, score) of every rank-1 detection in [start, end)."""
        return self.query(
            "SELECT recorder, channel, frame_time, label, score FROM {db}.detections FINAL "
            "WHERE rank = 1 AND frame_time >= {start:DateTime64(3, 'UTC')} AND frame_time < {end:DateTime64(3, 'UTC')} "
            "ORDER BY recorder, channel, frame_time",
            _utc_naive(start=start, end=end),
        )

    def complete_windows(self, start: datetime, end: datetime) -> set[tuple[str, int, datetime]]:
        """(recorder, channel, hour) of every ledger row with an hour in [start, end)."""
        rows = self.query(
            "SELECT DISTINCT recorder, channel, hour FROM {db}.windows "
            "WHERE hour >= {start:DateTime('UTC')} AND hour < {end:DateTime('UTC')}",
            _utc_naive(start=start, end=end),
        )
        return {(recorder, int(channel), hour) for recorder, channel, hour in rows}

    def summary_between(self, start: datetime, end: datetime, top: int = 3) -> dict[str, SegmentSummary]:
        """Per recorder: segments, seconds of video, remuxed segments, its `top` rank-1 labels (a
        classifier's) and its objects by channel and label (a detector's)."""
        window = {"s": start, "e": end}
        summaries = {
            recorder: SegmentSummary(recorder, int(count), float(seconds), int(remuxed))
            for recorder, count, seconds, remuxed in self.query(
                "SELECT recorder, count(), sum(duration_s), countIf(transcode_mode = 'remux') "
                "FROM {db}.segments FINAL WHERE start >= {s:DateTime64(3)} AND start < {e:DateTime64(3)} "
                "GROUP BY recorder",
                window,
            )
        }
        for recorder, label, frames in self.query(
            "SELECT recorder, label, count() AS n FROM {db}.detections FINAL WHERE rank = 1 "
            "AND frame_time >= {s:DateTime64(3)} AND frame_time < {e:DateTime64(3)} "
            f"GROUP BY recorder, label ORDER BY recorder, n DESC LIMIT {int(top)} BY recorder",
            window,
        ):
            if recorder in summaries:
                summaries[recorder].top_labels.append((label, int(frames)))
        for recorder, channel, label, objects in self.query(
            "SELECT recorder, channel, label, count() AS n FROM {db}.objects FINAL "
            "WHERE start >= {s:DateTime64(3)} AND start < {e:DateTime64(3)} "
            "GROUP BY recorder, channel, label ORDER BY recorder, channel, n DESC, label",
            window,
        ):
            if recorder in summaries:
                summaries[recorder].objects.setdefault(int(channel), []).append((label, int(objects)))
        return summaries

    # -- the review app's reads ------------------------------------------------------------------

    def search_objects(self, where: ObjectFilter, limit: int, offset: int = 0) -> list[ObjectRow]:
        """Tracked objects matching `where`, newest first, `limit` of them after skipping `offset`."""
        names = columns(ObjectRow)
        clause, params = where.where()
        rows = self.query(
            f"SELECT {', '.join(names)} FROM {{db}}.objects FINAL WHERE {clause} "
            "ORDER BY start DESC, recorder, channel, segment, object_id "
            "LIMIT {limit:UInt32} OFFSET {offset:UInt64}",
            params | {"limit": int(limit), "offset": int(offset)},
        )
        return [ObjectRow(**dict(zip(names, row, strict=True))) for row in rows]

    def object_by_key(self, recorder: str, channel: int, segment: str, object_id: str) -> ObjectRow | None:
        """One tracked object by its table key, or None."""
        names = columns(ObjectRow)
        rows = self.query(
            f"SELECT {', '.join(names)} FROM {{db}}.objects FINAL "
            "WHERE recorder = {recorder:String} AND channel = {channel:UInt16} "
            "AND segment = {segment:String} AND object_id = {object_id:String} LIMIT 1",
            {"recorder": recorder, "channel": int(channel), "segment": segment, "object_id": object_id},
        )
        return ObjectRow(**dict(zip(names, rows[0], strict=True))) if rows else None

    def hourly_objects(self, where: ObjectFilter) -> list[HourlyObjects]:
        """Objects per hour, label and channel from `objects_hourly`, for the hours that meet
        [where.start, where.end) (`min_score` does not apply: the summary keeps no scores per object)."""
        conditions, params = where.keys()
        if where.start is not None:
            conditions.append("hour >= toStartOfHour({start:DateTime('UTC')})")
            params |= _utc_naive(start=where.start)
        if where.end is not None:
            conditions.append("hour < {end:DateTime('UTC')}")
            params |= _utc_naive(end=where.end)
        rows = self.query(
            "SELECT recorder, channel, hour, label, sum(objects), max(best_score) FROM {db}.objects_hourly "
            f"WHERE {' AND '.join(conditions) or '1'} "
            "GROUP BY recorder, channel, hour, label ORDER BY recorder, channel, hour, label",
            params,
        )
        return [
            HourlyObjects(recorder, int(channel), hour, label, int(objects), float(best))
            for recorder, channel, hour, label, objects, best in rows
        ]

    def object_choices(self) -> list[tuple[str, int, str]]:
        """(recorder, channel, label) of every combination with objects: the search form's choices."""
        rows = self.query(
            "SELECT DISTINCT recorder, channel, label FROM {db}.objects_hourly ORDER BY recorder, channel, label"
        )
        return [(recorder, int(channel), label) for recorder, channel, label in rows]

    # -- retention's reads -------------------------------------------------------------------------

    def persisted_segments(
        self, since: datetime | None = None
    ) -> list[tuple[str, int, str, datetime, datetime]]:
        """(recorder, channel, segment, start, persisted at) of every segment with a row, started at or
        after `since` (all when None); `persisted at` is when its latest row was written."""
        where, params = "1", {}
        if since is not None:
            where, params = "start >= {since:DateTime64(3, 'UTC')}", _utc_naive(since=since)
        rows = self.query(
            "SELECT recorder, channel, segment, argMax(start, exported_at), max(exported_at) "
            f"FROM {{db}}.segments WHERE {where} GROUP BY recorder, channel, segment",
            params,
        )
        return [
            (recorder, int(channel), segment, start, at) for recorder, channel, segment, start, at in rows
        ]

    def thumbnails_named(self, since: datetime | None = None) -> set[str]:
        """The thumbnail keys `objects` rows name, of objects that started at or after `since` (all when None)."""
        where, params = "thumbnail != ''", {}
        if since is not None:
            where += " AND start >= {since:DateTime64(3, 'UTC')}"
            params = _utc_naive(since=since)
        return {
            row[0]
            for row in self.query(f"SELECT DISTINCT thumbnail FROM {{db}}.objects WHERE {where}", params)
        }

    def deletions_of(self, keys: Sequence[str]) -> list[DeletionRow]:
        """What `deletions` holds for these keys (store keys or export paths), oldest first."""
        names = columns(DeletionRow)
        rows = self.query(
            f"SELECT {', '.join(names)} FROM {{db}}.deletions FINAL WHERE key IN {{keys:Array(String)}} "
            "ORDER BY deleted_at, what, key",
            {"keys": list(keys)},
        )
        return [DeletionRow(**dict(zip(names, row, strict=True))) for row in rows]


def _utc_naive(**times: datetime) -> dict[str, datetime]:
    """Query parameters for DateTime64(3, 'UTC') columns: clickhouse-connect sends naive values as they are."""
    return {k: v.astimezone(UTC).replace(tzinfo=None) for k, v in times.items()}


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
