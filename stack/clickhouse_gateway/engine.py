"""chdb connections on one data folder, handed to HTTP requests one at a time."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from chdb.state.sqlitelike import Connection, connect

from stack.clickhouse_gateway.confinement import refusal
from stack.clickhouse_gateway.errors import GatewayError, shutting_down

log = logging.getLogger(__name__)
_SETTING_NAME = re.compile(r"\A\w+\Z")


@dataclass
class Slot:
    """One chdb connection, with its own current database and SET state (a ClickHouse session)."""

    conn: Connection
    pooled: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    database: str = ""  # what this connection last switched to with USE; "" when unknown
    timeout: float = 60.0
    last_used: float = field(default_factory=time.monotonic)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """One connection per HTTP session_id (kept until idle for session_timeout), a pool for the rest.

    chdb runs queries of different connections in parallel, and keeps SET and USE per connection,
    so a session here behaves as a ClickHouse session does.
    """

    MAX_SESSIONS = 256

    def __init__(self, path: str) -> None:
        self._path = path
        self._guard = threading.Lock()
        self._sessions: dict[str, Slot] = {}
        self._idle: list[Slot] = []
        self._all: list[Slot] = []
        self._closed = False
        # Held for the whole run: chdb shuts its engine down when the last connection closes.
        anchor = self._open(pooled=False)
        probe = anchor.conn.query("SELECT version(), timezone()", "TSV").bytes().decode()
        self.version, self.timezone = probe.split()

    def _open(self, pooled: bool) -> Slot:
        slot = Slot(connect(self._path), pooled)
        self._all.append(slot)
        return slot

    @contextmanager
    def slot(self, session_id: str, session_timeout: float) -> Iterator[Slot]:
        with self._guard:
            if self._closed:
                raise shutting_down()
            self._expire_sessions()
            if session_id:
                slot = self._sessions.get(session_id)
                if slot is None:
                    slot = self._sessions[session_id] = self._open(pooled=False)
                if not slot.lock.acquire(blocking=False):
                    raise GatewayError.of(
                        373, "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client"
                    )
                slot.timeout = session_timeout
            else:
                slot = self._idle.pop() if self._idle else self._open(pooled=True)
                slot.lock.acquire()
        try:
            yield slot
        finally:
            slot.last_used = time.monotonic()
            slot.lock.release()
            if slot.pooled:
                with self._guard:
                    self._idle.append(slot)

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        by_age = sorted(self._sessions.items(), key=lambda item: item[1].last_used)
        for index, (session_id, slot) in enumerate(by_age):
            crowded = len(by_age) - index > self.MAX_SESSIONS
            if (crowded or now - slot.last_used > slot.timeout) and slot.lock.acquire(blocking=False):
                del self._sessions[session_id]
                self._all.remove(slot)
                slot.conn.close()

    @staticmethod
    def _confine(conn: Connection, sql: str) -> None:
        """Refuse what a real server refuses an ordinary user (`confinement`)."""

        def render(statement: str) -> str:
            # Query parameters are read in TabSeparated escaping.
            escaped = statement.translate(
                {ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}
            )
            try:
                rendered = conn.query(
                    "SELECT formatQuerySingleLine({q:String})", "RawBLOB", params={"q": escaped}
                )
            except Exception as exc:
                raise GatewayError.from_engine(exc) from None
            return rendered.bytes().decode()

        refused = refusal(sql, render)
        if refused is not None:
            raise refused

    @contextmanager
    def _scoped(self, slot: Slot, database: str | None, settings: dict[str, str]) -> Iterator[Connection]:
        """The connection with the request's database and settings; settings last for this request only."""
        # A pooled connection must not carry one request's USE into the next.
        database = database or ("default" if slot.pooled else None)
        for name in settings:
            if not _SETTING_NAME.match(name):
                raise GatewayError.of(115, "UNKNOWN_SETTING", f"Unknown setting '{name}'")
        try:
            if database and database != slot.database:
                slot.conn.query(f"USE `{database.replace('`', '``')}`")
                slot.database = database
            if settings:
                slot.conn.query("SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in settings.items()))
        except Exception as exc:
            raise GatewayError.from_engine(exc) from None
        try:
            yield slot.conn
        except GatewayError:
            raise
        except Exception as exc:
            raise GatewayError.from_engine(exc) from None
        finally:
            if settings:
                try:
                    slot.conn.query("SET " + ", ".join(f"{name} = DEFAULT" for name in settings))
                except Exception:
                    log.exception("could not reset settings %s", sorted(settings))

    def query(
        self,
        slot: Slot,
        sql: str,
        fmt: str,
        database: str | None,
        settings: dict[str, str],
        params: dict[str, str],
    ) -> tuple[bytes, dict[str, int]]:
        """Run one statement; `fmt` is the output format unless the SQL names its own."""
        with self._scoped(slot, database, settings) as conn:
            self._confine(conn, sql)
            result = conn.query(sql, fmt, params=params)
            if re.match(r"\s*USE\b", sql, re.I):
                slot.database = ""
        if result is None:
            return b"", {}
        data = result.bytes()
        return data, {
            "read_rows": result.rows_read(),
            "read_bytes": result.bytes_read(),
            "result_bytes": len(data),
        }

    def insert(
        self,
        slot: Slot,
        statement: str,
        fmt: str,
        data: Iterator[bytes],
        database: str | None,
        settings: dict[str, str],
    ) -> dict[str, int]:
        """Stream `data` (in format `fmt`) into `INSERT INTO t [(cols)] [SETTINGS ...]`."""
        with self._scoped(slot, database, settings) as conn:
            self._confine(conn, f"{statement} FORMAT {fmt}")
            with conn.send_insert(statement, fmt) as inserter:
                for chunk in data:
                    if chunk:
                        inserter.append(chunk)
                result = inserter.finish()
        return {"written_rows": result.rows_written, "written_bytes": result.bytes_written}

    def close(self, grace: float = 30.0) -> None:
        """Let running requests finish (up to `grace` seconds each), then close every connection."""
        with self._guard:
            self._closed = True
            slots, self._all = self._all, []
        for slot in slots:
            slot.lock.acquire(timeout=grace)
            slot.conn.close()
