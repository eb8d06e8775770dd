"""The ClickHouse gateway, used through the real clickhouse-connect client as against a production server."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect
import lz4.frame
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from stack.paths import PROJECT_ROOT
from stack.ports import HOST, free_port, is_listening
from tests.gateway_process import PASSWORD_ENV, Gateway

PASSWORD = "gw-" + uuid.uuid4().hex


def start_gateway(data_dir: Path, port: int | None = None) -> Gateway:
    gw = Gateway(data_dir, PASSWORD, port or free_port())
    gw.start()
    return gw


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    with Gateway(tmp_path_factory.mktemp("clickhouse"), PASSWORD) as gw:  # its stop asserts a clean exit
        yield gw


@pytest.fixture(scope="module")
def client(gateway):
    c = gateway.client()
    c.command("CREATE DATABASE IF NOT EXISTS nvr")
    yield c
    c.close()


FRAME_COLUMNS = ["recorder", "frame_time", "rank", "label", "score", "bytes", "ratio", "tags"]
FRAME_DDL = """
CREATE TABLE {name} (
    recorder LowCardinality(String), frame_time DateTime64(3, 'UTC'), rank UInt8, label String,
    score Float32, bytes UInt64, ratio Float64, tags Array(String)
) ENGINE = ReplacingMergeTree ORDER BY (recorder, frame_time, rank)
SETTINGS non_replicated_deduplication_window = 1000
"""


def frame_rows(n: int = 3) -> list[list]:
    base = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    return [
        ["nvr-1", base.replace(second=i), i, f"label-{i}", 0.5 + i / 8, 2**40 + i, i / 3, ["a"] * i]
        for i in range(n)
    ]


def new_table(client) -> str:
    name = f"nvr.frames_{uuid.uuid4().hex[:8]}"
    client.command(FRAME_DDL.format(name=name))
    return name


@pytest.mark.parametrize("compress", [True, False], ids=["compress-default", "compress-off"])
def test_typed_rows_round_trip(gateway, client, compress):
    table = new_table(client)
    c = gateway.client(compress=compress)
    rows = frame_rows()
    summary = c.insert(table, rows, column_names=FRAME_COLUMNS)
    assert summary.written_rows == len(rows)

    result = c.query(f"SELECT * FROM {table} ORDER BY rank")
    assert result.column_names == tuple(FRAME_COLUMNS)
    assert [t.name for t in result.column_types] == [
        "LowCardinality(String)", "DateTime64(3, 'UTC')", "UInt8", "String",
        "Float32", "UInt64", "Float64", "Array(String)",
    ]  # fmt: skip
    for got, sent in zip(result.result_rows, rows, strict=True):
        assert got[0] == sent[0] and got[2:4] == tuple(sent[2:4]) and got[5] == sent[5] and got[7] == sent[7]
        assert got[1].replace(tzinfo=UTC) == sent[1]
        assert got[4] == pytest.approx(sent[4]) and got[6] == pytest.approx(sent[6])
    c.close()


def test_ddl_alter_and_materialized_view(client):
    table = new_table(client)
    client.command(f"ALTER TABLE {table} ADD COLUMN model String DEFAULT 'effnet'")
    client.command(
        f"CREATE MATERIALIZED VIEW {table}_per_label ENGINE = SummingMergeTree ORDER BY label "
        f"AS SELECT label, count() AS n FROM {table} GROUP BY label"
    )
    client.insert(table, frame_rows(), column_names=FRAME_COLUMNS)
    assert client.command(f"SELECT model FROM {table} LIMIT 1") == "effnet"
    assert client.command(f"SELECT sum(n) FROM {table}_per_label") == 3
    assert client.command(f"EXISTS TABLE {table}_per_label") == 1


def test_dedup_token_matches_clickhouse(client):
    table = new_table(client)
    rows = frame_rows()
    for token in ("batch-1", "batch-1"):
        client.insert(table, rows, column_names=FRAME_COLUMNS, settings={"insert_deduplication_token": token})
    assert client.command(f"SELECT count() FROM {table}") == len(rows)
    client.insert(table, rows, column_names=FRAME_COLUMNS, settings={"insert_deduplication_token": "batch-2"})
    assert client.command(f"SELECT count() FROM {table}") == 2 * len(rows)
    # The token lasts for its own request only: later plain inserts are not deduplicated against it.
    client.insert(table, rows, column_names=FRAME_COLUMNS)
    assert client.command(f"SELECT count() FROM {table}") == 3 * len(rows)


def test_parameter_binding(client):
    table = new_table(client)
    client.insert(table, frame_rows(), column_names=FRAME_COLUMNS)
    after = datetime(2024, 5, 6, 7, 8, 0, 500000, tzinfo=UTC)
    server_side = client.query(
        f"SELECT rank FROM {table} WHERE frame_time > {{t:DateTime64(3, 'UTC')}} AND label != {{l:String}}",
        parameters={"t": after, "l": "label-2"},
    )
    assert server_side.result_rows == [(1,)]
    client_side = client.query(f"SELECT rank FROM {table} WHERE label = %(l)s", parameters={"l": "it's-2"})
    assert client_side.result_rows == []
    assert client.query("SELECT %(x)s + 1", parameters={"x": 41}).result_rows == [(42,)]
    # A value too long for the URL travels as a multipart form field.
    long_value = "x" * 10_000
    assert client.query("SELECT length({s:String})", parameters={"s": long_value}).result_rows == [(10_000,)]


def test_client_database_option(gateway, client):
    c = gateway.client(database="nvr")
    c.command("CREATE TABLE plain (x UInt8) ENGINE = MergeTree ORDER BY x")
    c.insert("plain", [[5]], column_names=["x"])
    assert c.command("SELECT currentDatabase(), sum(x) FROM plain") == ["nvr", "5"]
    assert client.command("SELECT count() FROM nvr.plain") == 1
    c.close()
    with pytest.raises(DatabaseError, match="UNKNOWN_DATABASE"):
        gateway.client(database="no_such_db")


def test_sessions_keep_their_own_state(gateway):
    first, second = gateway.client(), gateway.client()
    first.command("SET max_block_size = 1234")
    first.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
    first.command("INSERT INTO scratch VALUES (7)")
    assert first.command("SELECT getSetting('max_block_size'), sum(x) FROM scratch") == ["1234", "7"]
    assert second.command("SELECT getSetting('max_block_size')") != 1234
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        second.command("SELECT * FROM scratch")
    first.close()
    second.close()


def test_bad_sql_surfaces_clickhouse_error(client):
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR") as syntax:
        client.query("SELEC 1")
    assert syntax.value.code == 62
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as missing:
        client.command("SELECT * FROM nvr.no_such_table")
    assert missing.value.code == 60
    assert client.command("SELECT 1") == 1  # the connection is still usable


def test_bad_insert_data_is_rejected_without_rows(client):
    table = new_table(client)
    with pytest.raises(DatabaseError, match="CANNOT_PARSE"):
        client.raw_insert(table, ["rank", "label"], "1\tok\nnot-a-number\tbad\n", fmt="TabSeparated")
    assert client.command(f"SELECT count() FROM {table}") == 0
    client.raw_insert(table, ["rank", "label"], "1\tok\n2\tfine\n", fmt="TabSeparated")
    # Compressed data travels with the statement in the URL instead of in front of the data.
    block = lz4.frame.compress(b"3\tpacked\n")
    client.raw_insert(table, ["rank", "label"], block, fmt="TabSeparated", compression="lz4")
    labels = client.command(f"SELECT groupArray(label) FROM (SELECT label FROM {table} ORDER BY rank)")
    assert labels == "['ok','fine','packed']"


def test_wrong_password_rejected_without_echo(gateway):
    wrong = "wrong-" + uuid.uuid4().hex
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED") as failed:
        gateway.client(password=wrong)
    assert failed.value.code == 516
    assert wrong not in str(failed.value)

    token = base64.b64encode(f"default:{wrong}".encode()).decode()
    request = urllib.request.Request(
        f"http://{HOST}:{gateway.port}/?query=SELECT+1", headers={"Authorization": f"Basic {token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(request, timeout=10)
    assert http_error.value.code == 403
    assert http_error.value.headers["X-ClickHouse-Exception-Code"] == "516"
    assert wrong not in http_error.value.read().decode()


def test_http_surface(gateway):
    with urllib.request.urlopen(f"http://{HOST}:{gateway.port}/ping", timeout=10) as ping:
        assert ping.read() == b"Ok.\n"
    request = urllib.request.Request(
        f"http://{HOST}:{gateway.port}/?enable_http_compression=1&default_format=JSONEachRow",
        data=b"SELECT 'gateway' AS who",
        headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": PASSWORD, "Accept-Encoding": "lz4"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "lz4"
        assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
        assert response.headers["X-ClickHouse-Query-Id"]
        assert lz4.frame.decompress(response.read()) == b'{"who":"gateway"}\n'


def test_concurrent_clients(gateway):
    results: list[int] = []
    errors: list[BaseException] = []

    def work():
        try:
            c = gateway.client()
            for _ in range(5):
                results.append(c.command("SELECT sum(number) FROM numbers(100000)"))
            c.close()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == [4999950000] * 30


def test_restart_keeps_data_sigterm_frees_port(tmp_path):
    gw = start_gateway(tmp_path / "ch")
    c = gw.client()
    c.command("CREATE DATABASE nvr")
    table = new_table(c)
    c.insert(table, frame_rows(), column_names=FRAME_COLUMNS)
    c.close()

    gw.stop()  # asserts a clean exit
    assert not is_listening(gw.port)
    with socket.socket() as probe:  # free to listen on again (REUSEADDR only skips TIME_WAIT leftovers)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((HOST, gw.port))
        probe.listen()

    started = time.monotonic()
    with pytest.raises(OperationalError):
        clickhouse_connect.get_client(
            host=HOST, port=gw.port, password=PASSWORD, connect_timeout=2, send_receive_timeout=5
        )
    assert time.monotonic() - started < 20

    again = start_gateway(gw.data_dir, gw.port)
    c = again.client()
    assert c.command(f"SELECT count() FROM {table}") == 3
    c.close()
    again.stop()


def test_port_taken_fails_loudly(tmp_path):
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, PASSWORD_ENV: "", "PYTHONPATH": str(PROJECT_ROOT)}
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "stack.clickhouse_gateway", "--port", str(port), "--data-dir", str(tmp_path),
             "--password-env", PASSWORD_ENV],
            env=env, capture_output=True, timeout=60,
        )  # fmt: skip
    assert done.returncode != 0
    assert b"cannot listen" in done.stderr


def test_data_folder_owned_by_one_gateway(gateway):
    env = {**os.environ, PASSWORD_ENV: "", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "stack.clickhouse_gateway", "--port", str(free_port()),
         "--data-dir", str(gateway.data_dir), "--password-env", PASSWORD_ENV],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert b"cannot open" in done.stderr


def test_an_ordinary_user_reaches_no_file_program_or_other_server(client, tmp_path):
    # chdb, like clickhouse-local, would read or write any path of the machine; a real server
    # confines file() to its user files folder and grants an ordinary user no other source.
    secret = tmp_path / "secret.txt"
    secret.write_text("not for ClickHouse users\n")
    written = tmp_path / "written.csv"
    refused = {
        f"SELECT * FROM file('{secret}', 'LineAsString')": 291,
        f"SELECT file('{secret}')": 291,
        f"SELECT * FROM `\\x66ile`('{secret}', 'LineAsString')": 291,  # an escaped name
        f"SELECT * FROM FiLe('{secret}', 'LineAsString')": 291,
        f"SELECT 1 WHERE 1 IN (SELECT 1 FROM file('{secret}', 'LineAsString'))": 291,
        f"INSERT INTO FUNCTION file('{written}', 'CSV') SELECT 1": 291,
        f"CREATE TABLE nvr.leak (line String) ENGINE = File(LineAsString, '{secret}')": 291,
        f"SELECT 1 INTO OUTFILE '{written}'": 358,
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')": 497,
        "SELECT * FROM executable('id', 'TSV', 'a String')": 497,
        "SELECT * FROM remote('127.0.0.1:9000', system.one)": 497,
        f"SELECT 1; SELECT * FROM file('{secret}', 'LineAsString')": 62,
    }
    for sql, code in refused.items():
        with pytest.raises(DatabaseError) as refusal:
            client.query(sql)
        assert refusal.value.code == code, (sql, str(refusal.value))
        assert "not for ClickHouse users" not in str(refusal.value)
    assert not written.exists()
    with pytest.raises(DatabaseError) as insert:
        client.raw_insert(f"FUNCTION file('{written}', 'CSV')", ["a"], "1\n", fmt="CSV")
    assert insert.value.code == 291 and not written.exists()
    # What merely mentions such a name in a string, and ordinary work, still runs.
    assert client.command("SELECT 'file(/etc/passwd) INTO OUTFILE'") == "file(/etc/passwd) INTO OUTFILE"
    table = new_table(client)
    client.raw_insert(table, ["rank", "label"], "1\tok\n", fmt="TabSeparated")
    assert (
        client.command(f"SELECT count() FROM {table} WHERE label = {{l:String}}", parameters={"l": "ok"}) == 1
    )
