"""The HTTP front: ClickHouse's request parameters, auth, response headers and errors."""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from stack.clickhouse_gateway import wire
from stack.clickhouse_gateway.engine import Engine
from stack.clickhouse_gateway.errors import GatewayError
from stack.ports import HOST

log = logging.getLogger("stack.clickhouse_gateway")

# URL parameters that steer the HTTP exchange; every other one is a query-level setting.
TRANSPORT_PARAMS = {
    "query", "database", "session_id", "session_timeout", "session_check", "query_id", "quota_key",
    "default_format", "client_protocol_version", "compress", "decompress", "buffer_size", "role",
    "user", "password", "wait_end_of_query", "send_progress_in_http_headers", "enable_http_compression",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
}  # fmt: skip
# Statements that answer in an output format, which ClickHouse announces with X-ClickHouse-Format.
RESULT_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "VALUES"}
FIRST_WORD = re.compile(r"\A(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*(\w+)", re.S)
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\b.*)?\s*;?\s*\Z", re.I | re.S)
CONTENT_TYPES = {"Native": "application/octet-stream", "JSON": "application/json; charset=UTF-8"}
TEXT = "text/plain; charset=UTF-8"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections close after this, like ClickHouse's keep_alive_timeout
    # Headers and body go out as two writes: with Nagle's algorithm the body waits for the client's
    # delayed ACK of the headers (40 ms on Linux), on every reply of a kept-alive connection.
    disable_nagle_algorithm = True
    engine: Engine
    user = "default"
    password = ""
    # Tests only (`--hold-file`): while that file exists, an INSERT is executed and its reply
    # withheld, so a test can kill the client between the insert and its acknowledgment.
    hold_file: str | None = None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {"X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4())}
        body = wire.read_body(self.rfile, self.headers)
        try:
            if url.path in ("/ping", "/replicas_status") or (
                url.path == "/" and self.command == "GET" and "query" not in params
            ):
                _drain(body)
                return self._reply(200, b"Ok.\n", {}, "text/html; charset=UTF-8")
            if url.path != "/":
                raise GatewayError(0, "NOT_FOUND", f"There is no handle {url.path}")
            self._authenticate(params)
            started = time.monotonic_ns()
            data, stats, fmt = self._execute(params, body)
            stats = {"read_rows": 0, "read_bytes": 0, "written_rows": 0, "written_bytes": 0, **stats}
            stats["elapsed_ns"] = time.monotonic_ns() - started
            if fmt is None and stats.get("written_rows"):
                self._hold(stats["written_rows"])
            headers["X-ClickHouse-Summary"] = json.dumps({k: str(v) for k, v in stats.items()})
            if fmt:
                headers["X-ClickHouse-Format"] = fmt
            if data and params.get("enable_http_compression") in ("1", "true"):
                data, headers["Content-Encoding"] = wire.compress(
                    data, self.headers.get("Accept-Encoding", "")
                )
            self._reply(200, data, headers, CONTENT_TYPES.get(fmt or "", TEXT))
        except Exception as exc:
            error = exc if isinstance(exc, GatewayError) else GatewayError.from_engine(exc)
            if not isinstance(exc, GatewayError):
                log.exception("request failed")
            try:
                _drain(body)  # so the keep-alive connection can carry the next request
            except Exception:
                self.close_connection = True
            if error.code:
                headers["X-ClickHouse-Exception-Code"] = str(error.code)
            self._reply(error.status, error.body(self.engine.version), headers, TEXT)

    def _hold(self, rows: int) -> None:
        """While the hold file exists: note `<client address> <rows>` in `<hold file>.held`, wait."""
        hold = self.hold_file
        if not hold or not os.path.exists(hold):
            return
        with open(f"{hold}.held", "a") as fh:
            fh.write(f"{self.client_address[0]} {rows}\n")
        log.info("insert of %d rows from %s done, reply held", rows, self.client_address[0])
        while os.path.exists(hold):
            time.sleep(0.05)

    def _authenticate(self, params: dict[str, str]) -> None:
        user, password = params.get("user", "default"), params.get("password", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")
        elif "X-ClickHouse-User" in self.headers:
            user, password = self.headers["X-ClickHouse-User"], self.headers.get("X-ClickHouse-Key", "")
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        if auth.startswith("Bearer ") or not (user_ok and password_ok):
            raise GatewayError.of(
                516,
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            )

    def _execute(
        self, params: dict[str, str], body: Iterator[bytes]
    ) -> tuple[bytes, dict[str, int], str | None]:
        """Run the request's statement: (response body, summary counters, output format or None)."""
        if params.get("decompress", "0") not in ("0", "false"):
            raise GatewayError.of(
                48, "NOT_IMPLEMENTED", "decompress=1 (native block compression) is not supported"
            )
        content = wire.inflate(body, self.headers.get("Content-Encoding", ""))
        if self.headers.get_content_type() == "multipart/form-data":
            params = {**params, **wire.form_fields(self.headers["Content-Type"], b"".join(content))}
            content = iter(())
        query = params.get("query", "")
        # ClickHouse reads the statement from the `query` parameter followed by the body.
        split = wire.split_insert(chain([query.encode() + b"\n"] if query else [], content))
        settings = {
            k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")
        }
        database = params.get("database") or self.headers.get("X-ClickHouse-Database")
        session_timeout = float(params.get("session_timeout") or 60)
        with self.engine.slot(params.get("session_id", ""), session_timeout) as slot:
            if split[0] is not None:
                statement, fmt, data = split
                return b"", self.engine.insert(slot, statement, fmt, data, database, settings), None
            sql = split[2].decode(errors="replace").strip()
            if not sql:
                raise GatewayError.of(62, "SYNTAX_ERROR", "Empty query")
            default_fmt = (
                params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
            )
            if not default_fmt.isidentifier() or default_fmt.lower() in ("dataframe", "arrowtable", "debug"):
                raise GatewayError.of(73, "UNKNOWN_FORMAT", f"Unknown format {default_fmt}")
            bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            result, stats = self.engine.query(slot, sql, default_fmt, database, settings, bind)
        first, named = FIRST_WORD.match(sql), TRAILING_FORMAT.search(sql)
        if not result and not (first and first.group(1).upper() in RESULT_STATEMENTS):
            return result, stats, None
        return result, stats, named.group(1) if named else default_fmt

    def _reply(self, status: int, data: bytes, headers: dict[str, str], content_type: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if value:
                self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-ClickHouse-Server-Display-Name", socket.gethostname())
        self.send_header("X-ClickHouse-Timezone", self.engine.timezone)
        self.end_headers()
        self.wfile.write(data)


def _drain(body: Iterator[bytes]) -> None:
    for _ in body:
        pass


def serve(
    port: int, data_dir: str, user: str, password: str, stop: threading.Event, host: str = HOST
) -> None:
    """Serve until `stop` is set, then let running requests finish and release the data folder."""

    class BoundHandler(Handler):
        """This server's handler: its credentials and engine are class attributes of its own."""

    BoundHandler.user, BoundHandler.password = user, password
    handler = BoundHandler
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise SystemExit(f"clickhouse gateway: cannot listen on {host}:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    try:
        os.makedirs(data_dir, exist_ok=True)
        try:
            handler.engine = Engine(os.path.abspath(data_dir))
        except Exception as exc:
            raise SystemExit(
                f"clickhouse gateway: cannot open {data_dir} (another gateway on it?): {exc}"
            ) from None
        thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        thread.start()
        log.info("ClickHouse %s on http://%s:%d, data in %s", handler.engine.version, host, port, data_dir)
        stop.wait()
        log.info("stopping")
        server.shutdown()
    finally:
        server.server_close()
    handler.engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack.clickhouse_gateway",
        description="Serve ClickHouse's HTTP interface (the part clickhouse-connect uses) from chdb.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=HOST, help="address to listen on (default %(default)s)")
    parser.add_argument("--data-dir", required=True, help="chdb data folder, kept across restarts")
    parser.add_argument("--user", default="default")
    parser.add_argument("--password-env", required=True, help="variable holding the password (empty: none)")
    parser.add_argument("--hold-file", help="tests only: while this file exists, INSERT replies are withheld")
    args = parser.parse_args(argv)
    Handler.hold_file = args.hold_file
    if args.password_env not in os.environ:
        parser.error(f"environment variable {args.password_env} is not set")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(args.port, args.data_dir, args.user, os.environ[args.password_env], stop, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
