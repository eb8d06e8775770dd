"""The stack's Prefect database in the machine's PostgreSQL: one per data folder, none left over."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from stack import prefect_database

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the stack makes its database as root")


def _databases() -> set[str]:
    listed = prefect_database._psql(
        "SELECT datname FROM pg_database WHERE datname LIKE 'nvrflow_%';", tuples=True
    )
    return set(listed.split())


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_each_folder_has_its_own_database_and_a_removed_folder_loses_it(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    url = prefect_database.ensure(first, "pw-first")
    assert prefect_database.ensure(first, "pw-first") == url  # idempotent
    other = prefect_database.ensure(second, "pw-second")
    assert _name(url) != _name(other) and {_name(url), _name(other)} <= _databases()
    assert "pw-first" not in (first / "prefect" / "postgres-database").read_text()

    # An emptied folder is a new stack: a new database, and the old one goes.
    shutil.rmtree(first)
    renewed = prefect_database.ensure(first, "pw-first")
    assert _name(renewed) != _name(url)
    assert _name(url) not in _databases()

    # A folder removed for good loses its database at the next start of any stack.
    shutil.rmtree(second)
    prefect_database.ensure(first, "pw-first")
    assert _name(other) not in _databases()

    prefect_database.drop(first)
    assert _name(renewed) not in _databases()


def test_the_server_connects_with_the_url(tmp_path):
    asyncpg = pytest.importorskip("asyncpg")
    import asyncio

    url = prefect_database.ensure(tmp_path, "pw-connect")
    try:

        async def ask() -> int:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"), timeout=10)
            try:
                return await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        assert asyncio.run(ask()) == 1
    finally:
        prefect_database.drop(tmp_path)


def test_a_refused_statement_never_shows_the_password():
    # psql quotes the statement it could not parse; the password in it is masked.
    with pytest.raises(prefect_database.DatabaseUnavailable) as refused:
        prefect_database._psql("ALTER ROLE x PASSWORD 'sekret-xyz' WITH;", secret="sekret-xyz")
    assert "syntax error" in str(refused.value) and "PASSWORD '***'" in str(refused.value)
    assert "sekret-xyz" not in str(refused.value)


def test_on_sqlite_the_stack_widens_the_zombie_window_and_sends_logs_less_often(monkeypatch, tmp_path):
    from stack import supervisor
    from stack.state import prepare_state

    monkeypatch.delenv("NVRFLOW_ZOMBIE_WINDOW", raising=False)
    monkeypatch.delenv(prefect_database.URL_SETTING, raising=False)
    state = prepare_state(tmp_path)
    assert supervisor.zombie_window_s() == 90
    assert state.env()["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] == "0.5"
    monkeypatch.setenv(prefect_database.URL_SETTING, f"sqlite+aiosqlite:///{tmp_path}/prefect.db")
    assert supervisor.zombie_window_s() == 300
    assert state.env()["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] == "2.0"
    monkeypatch.setenv("NVRFLOW_ZOMBIE_WINDOW", "120")
    assert supervisor.zombie_window_s() == 120


def test_stacks_starting_at_once_find_a_stopped_cluster_accepting(tmp_path):
    # make test's processes each start a stack: a cluster that is down is started once, and no
    # stack goes on before it accepts connections ("the database system is starting up").
    version, name, port = "15", "nvrflowtest", "54329"
    here = ["pg_lsclusters", "--no-header", version, name]
    if subprocess.run(here, capture_output=True, timeout=30).returncode == 0:
        subprocess.run(["pg_dropcluster", "--stop", version, name], check=True, timeout=60)
    subprocess.run(
        ["pg_createcluster", "-p", port, version, name], check=True, capture_output=True, timeout=120
    )

    def start_and_ask() -> str:
        prefect_database.start_once(version, name)
        asked = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-p", port, "-c", "SELECT 1"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
        )
        return asked.stdout.strip() or asked.stderr.strip()

    try:
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(start_and_ask) for _ in range(3)]
            assert [each.result(timeout=120) for each in answers] == ["1", "1", "1"]
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, name], check=True, timeout=60)
