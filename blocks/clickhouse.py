"""ClickHouse sink block: the only place that speaks ClickHouse (through clickhouse-connect)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.clickhouse_schema import MIGRATIONS, TABLE_COLUMNS


class ClickHouseUnavailable(Exception):
    """ClickHouse could not be reached or did not answer: the rows may go to the outbox."""


class ClickHouseSink(Block):
    """Where segment metadata and detections are stored."""

    _block_type_name = "ClickHouse Sink"
    _description = "A ClickHouse server (HTTP interface) and database for nvrflow's tables."

    url: str = Field(default="http://127.0.0.1:8123", description="HTTP(S) address of the server.")
    username: str = "default"
    password: SecretStr = Field(default=SecretStr(""))
    database: str = "nvrflow"
    connect_timeout: float = 5.0
    send_receive_timeout: float = 60.0
    compress: bool = False

    def connect(self) -> ClickHouseWriter:
        return ClickHouseWriter(self)


class ClickHouseWriter:
    """One connection to the sink; create per task, close when done."""

    def __init__(self, sink: ClickHouseSink):
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import OperationalError

        parts = urlsplit(sink.url)
        self.database = sink.database
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

    def __enter__(self) -> ClickHouseWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _guard(self, call, *args, **kwargs):
        from clickhouse_connect.driver.exceptions import OperationalError

        try:
            return call(*args, **kwargs)
        except OperationalError as exc:
            raise ClickHouseUnavailable(f"ClickHouse unavailable: {_first_line(exc)}") from exc

    def migrate(self) -> list[str]:
        """Apply the migrations not applied yet, in order; returns the names applied now."""
        self._guard(self._client.command, f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._guard(
            self._client.command,
            f"CREATE TABLE IF NOT EXISTS {self.database}.schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY version",
        )
        done = {
            row[0]
            for row in self._guard(
                self._client.query, f"SELECT version FROM {self.database}.schema_migrations"
            ).result_rows
        }
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                self._guard(self._client.command, statement.replace("{db}", self.database))
            self._guard(
                self._client.insert,
                f"{self.database}.schema_migrations",
                [[migration.version, migration.name]],
                column_names=["version", "name"],
            )
            applied.append(migration.name)
        return applied

    def insert(self, table: str, rows: Sequence[dict[str, Any]], token: str) -> int:
        """Insert one batch; a repeated `token` is deduplicated by the server, so retries are safe."""
        if not rows:
            return 0
        columns = TABLE_COLUMNS[table]
        data = [[row[c] for c in columns] for row in rows]
        self._guard(
            self._client.insert,
            f"{self.database}.{table}",
            data,
            column_names=columns,
            # A deduplicated insert must not reach materialized views either (the hourly summary).
            settings={
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )
        return len(rows)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        """Run a read query; `{db}` in the SQL names the sink's database."""
        result = self._guard(
            self._client.query, sql.replace("{db}", self.database), parameters=parameters or {}
        )
        return [tuple(r) for r in result.result_rows]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
