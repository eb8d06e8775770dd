"""The embedded stack's Prefect database: a database of its own in the machine's PostgreSQL.

Not SQLite, Prefect's default: on SQLite a Prefect 3.8 server under a few concurrent flow runs
stalls for up to SQLite's 60 s busy timeout ("database is locked" in the triggers service).
Heartbeats of living runs then go unrecorded, the zombie automation marks those runs Crashed,
and the worker that still runs them dies when they are scheduled again. Production runs Prefect
on PostgreSQL (README), so the stack does as well.

As root (the quickstart): Debian's PostgreSQL cluster (`pg_lsclusters`; started with
`pg_ctlcluster` when down) gets one role and one database per stack data folder, both named
`nvrflow_<random>`. The name is kept in the folder (`prefect/postgres-database`, whose path is
the database's comment): a new or emptied folder gets a new database, and a database whose
marker is gone or names another (a removed folder, a finished test session's) is dropped at the
next start. The password is made once and kept in the stack's state file (mode 0600); it
reaches only the Prefect server's environment. Not root: `NVRFLOW_PREFECT_DATABASE_URL` names a
database an administrator made.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

from stack.ports import HOST

URL_SETTING = "NVRFLOW_PREFECT_DATABASE_URL"
_PREFIX = "nvrflow_"
_NAME = re.compile(r"nvrflow_[0-9a-f]{16}")  # what `ensure` makes: a plain SQL identifier
_SAFE = re.compile(r"[A-Za-z0-9_-]+")  # a password that needs no quoting in SQL or a URL
_TIMEOUT_S = 60
_LOCK = Path("/run/lock/nvrflow-postgresql.lock")  # one start of the cluster at a time
_SOCKET_DIR = "/var/run/postgresql"  # where Debian's clusters listen (psql's default too)


# On SQLite, what the stack's Prefect does differently. Under a fleet's load a Prefect 3.8 server
# on SQLite stalls on "database is locked": its deferred transactions fail at once when another
# of its connections wrote first, its triggers service drops an event after three quick retries
# (PREFECT_HOME/dlq), and flow runs' heartbeats fail to reach it while it is busy (their events
# websocket misses its keepalive). A living run's heartbeats then went missing for the usual 90 s
# zombie window, which marked it Crashed (bench/load.py: 3 and 1 runs of 50 in two passes). A
# window of ten heartbeats rides that out, at the price of a dead worker's runs being found up to
# 5 minutes after their last heartbeat instead of 90 s.
SQLITE_ZOMBIE_WINDOW_S = 300
# Flow runs send their logs every 2 s (Prefect's default), not 0.5 s: a quarter of the writes.
SQLITE_LOG_BATCH_INTERVAL_S = 2.0


def is_sqlite() -> bool:
    """The stack's Prefect server runs on a SQLite file (named by NVRFLOW_PREFECT_DATABASE_URL)."""
    return os.environ.get(URL_SETTING, "").startswith("sqlite")


class DatabaseUnavailable(RuntimeError):
    """The stack cannot have a Prefect database: says what to install or set."""


def ensure(data_dir: Path, password: str) -> str:
    """The folder's database, made if missing (idempotent); returns the server's connection URL."""
    if url := os.environ.get(URL_SETTING):
        return url
    if os.geteuid() != 0:
        raise DatabaseUnavailable(
            f"the stack's Prefect database is made in the machine's PostgreSQL as root; "
            f"as another user, set {URL_SETTING}=postgresql+asyncpg://user:password@host/db"
        )
    if not _SAFE.fullmatch(password):
        raise DatabaseUnavailable("the stack's database password must be URL-safe; remove the state file")
    port = _running_cluster_port()
    marker = _marker(data_dir)
    name = _named_by(marker)
    if name is None:
        name = _PREFIX + secrets.token_hex(8)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(name + "\n")
    _drop_orphans()
    _psql(
        f"""
        SELECT format('CREATE ROLE %I LOGIN', '{name}')
         WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') \\gexec
        ALTER ROLE {name} PASSWORD '{password}';
        SELECT format('CREATE DATABASE %I OWNER %I', '{name}', '{name}')
         WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{name}') \\gexec
        COMMENT ON DATABASE {name} IS {_literal(str(marker))};
        """,
        secret=password,
    )
    return f"postgresql+asyncpg://{name}:{password}@{HOST}:{port}/{name}"


def drop(data_dir: Path) -> None:
    """Remove the folder's database and role (the folder itself is the caller's)."""
    if os.environ.get(URL_SETTING) or os.geteuid() != 0:
        return
    name = _named_by(_marker(data_dir))
    if name is not None:
        _running_cluster_port()
        _drop(name)


def _marker(data_dir: Path) -> Path:
    return data_dir.resolve() / "prefect" / "postgres-database"


def _named_by(marker: Path) -> str | None:
    try:
        name = marker.read_text().strip()
    except OSError:
        return None
    return name if _NAME.fullmatch(name) else None


def _drop_orphans() -> None:
    """Databases of a stack whose folder's marker is gone or names another database."""
    listed = _psql(
        f"SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE '{_PREFIX}%';",
        tuples=True,
    )
    for line in listed.splitlines():
        name, _, marker = line.partition("|")
        if _NAME.fullmatch(name) and marker and _named_by(Path(marker)) != name:
            _drop(name)


def _drop(name: str) -> None:
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\nDROP ROLE IF EXISTS {name};")


def _running_cluster_port() -> int:
    """The port of the machine's first PostgreSQL cluster, started when it is down."""
    version, cluster, port, _ = _listed()
    start_once(version, cluster)
    return int(port)


def start_once(version: str, cluster: str) -> None:
    """Start the cluster if it is down; return once it accepts connections.

    Several stacks may start at once (make test's processes): the start is taken under a file
    lock, and every caller waits until the cluster accepts connections (a cluster being started,
    or recovering after a crash, is listed "online" while it still refuses them).
    """
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _, _, port, status = _listed(version, cluster)
        if status != "online":
            started = subprocess.run(
                ["pg_ctlcluster", version, cluster, "start"],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
            )
            if started.returncode != 0:
                said = (started.stderr or started.stdout).strip()[-500:]
                raise DatabaseUnavailable(f"PostgreSQL cluster {version}/{cluster} did not start: {said}")
    _wait_until_accepting(version, cluster, int(port))


def _listed(*which: str) -> tuple[str, str, str, str]:
    """Version, name, port and status of a cluster (`pg_lsclusters`; the first one by default)."""
    try:
        listed = subprocess.run(
            ["pg_lsclusters", "--no-header", *which],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DatabaseUnavailable(
            f"no PostgreSQL here for the stack's Prefect server ({exc}); install Debian's postgresql "
            "(make does) or set " + URL_SETTING
        ) from exc
    if len(listed) < 4:
        raise DatabaseUnavailable("PostgreSQL is installed but has no cluster: pg_createcluster 15 main")
    version, cluster, port, status = listed[:4]
    return version, cluster, port, status


def _wait_until_accepting(version: str, cluster: str, port: int) -> None:
    """Return once the cluster accepts connections (`pg_isready`), or say why not after a minute."""
    deadline = time.monotonic() + _TIMEOUT_S
    while True:
        ready = subprocess.run(
            ["pg_isready", "-q", "-h", _SOCKET_DIR, "-p", str(port), "-t", "5"],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
        )
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(
                f"PostgreSQL cluster {version}/{cluster} (port {port}) still refuses connections after "
                f"{_TIMEOUT_S} s; see /var/log/postgresql/postgresql-{version}-{cluster}.log"
            )
        time.sleep(0.5)  # polling the server's readiness, with the deadline above


def _psql(script: str, tuples: bool = False, secret: str = "") -> str:
    """Run SQL as the cluster's superuser; the script goes through stdin (never on a command line)."""
    argv = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]
    if tuples:
        argv += ["-A", "-t"]
    done = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=_TIMEOUT_S, cwd="/")
    if done.returncode != 0:
        said = done.stderr
        if secret:  # psql may quote the failing statement, and with it the password
            said = said.replace(secret, "***")
        said = said.strip()[-500:]
        raise DatabaseUnavailable(f"PostgreSQL refused the stack's database setup: {said}")
    return done.stdout


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
