"""The cluster fixture: one Prefect server on PostgreSQL, two workers, recorders and services,
each on its own network-namespace host (tests/cluster/hosts.py), brought up once per session.

The model server serves both models. The block `nvrflow` is the classifier here (not the
detector, as in the embedded stack): the fleet, outage and dead-worker tests count its
`detections` rows; a run that wants people and vehicles names `DETECTOR_BLOCK` as its
`model_block`. The review app runs on a host of its own, on the video store every host reaches.

Every process runs inside a host's namespace and binds that host's address only; the test
process reaches them through the root namespace's veth onto the bridge. The Prefect API's
basic-auth string, the database's and ClickHouse's passwords are generated per run and only
ever travel in environment variables and files readable by root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from stack.paths import PROJECT_ROOT
from stack.ports import wait_for_port
from tests.cluster import hosts

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
PREFECT_PORT = 4200
GATEWAY_PORT = 8123
MODEL_PORT = 8500
REVIEW_PORT = 8600
DETECTOR_BLOCK = "detector"
POOL = "nvrflow-local"
WORKERS = {"worker-a": 2, "worker-b": 2}  # host role: --limit
RECORDER_HOSTS = ["rec-a", "rec-b"]
RECORDERS_PER_HOST = 4
SEGMENTS = 3
SEGMENT_SECONDS = 4
WINDOW_START = datetime(2026, 11, 3, 0, 0, 0, tzinfo=UTC)
# ClickHouse has a host of its own (not the services host, where the model server is), so a
# route in one worker host can make ClickHouse, and only ClickHouse, unreachable from it.
ROLES = ["server", "services", "clickhouse", "review", *WORKERS, *RECORDER_HOSTS]
OUTAGES = ["prefect", "postgres"]
# Recorders of one test each (name: segments), limit 1: a dead worker host under a download and
# under an insert, cached files on another host, the outbox flushed from another host.
SINGLE_USE = {"crash-download": 2, "crash-insert": 2, "cache-move": 2, "outbox": 2}
# A recorder of a scripted scene (people and vehicles) for the detector, served by a simulator of
# its own on the first recorder host (a simulator's frame size is one for all its recorders):
# the script starts with the recording, and its first person comes into view 26 s after the
# start, so in the second segment.
SCRIPTED = "people"
SCRIPT = "demo-pasture"
SCRIPT_SEGMENT_SECONDS = 20
SCRIPT_SEGMENTS = 2
SCRIPTED_PORT = 8301
# The cluster's crash detection, as the single-host stack's (stack/supervisor.py).
HEARTBEAT_S = 30
ZOMBIE_WINDOW_S = 90
START_TIMEOUT_S = 180
CALL_TIMEOUT_S = 300


class Secret(str):
    """A generated credential: the value for environments, never shown by repr()."""

    def __repr__(self) -> str:
        return "Secret('***')"


def _secret(nbytes: int = 24) -> Secret:
    return Secret(secrets.token_urlsafe(nbytes))


def recorder_limit(index: int) -> int:
    return 1 if index % 2 else 2


@dataclass
class Recorder:
    name: str
    host: str
    port: int
    limit: int


@dataclass
class Cluster:
    network: hosts.Network
    base: Path
    auth_string: Secret = field(repr=False)
    pg_password: Secret = field(repr=False)
    clickhouse_password: Secret = field(repr=False)
    recorder_password: Secret = field(repr=False)
    review_password: Secret = field(repr=False)
    recorders: list[Recorder] = field(default_factory=list)
    slow_recorders: dict[str, Recorder] = field(default_factory=dict)
    single_use: dict[str, Recorder] = field(default_factory=dict)
    scripted: Recorder | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    # addresses
    def address(self, role: str) -> str:
        return self.network.hosts[role].address

    @property
    def api_url(self) -> str:
        return f"http://{self.address('server')}:{PREFECT_PORT}/api"

    @property
    def clickhouse_url(self) -> str:
        return f"http://{self.address('clickhouse')}:{GATEWAY_PORT}"

    @property
    def model_target(self) -> str:
        return f"{self.address('services')}:{MODEL_PORT}"

    @property
    def review_url(self) -> str:
        return f"http://{self.address('review')}:{REVIEW_PORT}"

    @property
    def store(self) -> Path:
        """The video store's folder (the block `nvrflow-video`): a share every host reaches.

        Machines of their own would each mount one NFS or SMB share at this same path; the hosts
        here share one file system, so a folder of it stands for that share. It is no host's
        data folder: what a worker keeps for itself stays in its NVRFLOW_DATA.
        """
        return self.base / "shared" / "store"

    @property
    def results(self) -> Path:
        return self.base / "shared" / "results"

    @property
    def outbox(self) -> Path:
        """Every worker's NVRFLOW_OUTBOX: one folder, so a flush anywhere sends what any kept."""
        return self.base / "shared" / "outbox"

    @property
    def hold_file(self) -> Path:
        """While it exists, the ClickHouse gateway withholds INSERT replies (--hold-file)."""
        return self.base / "clickhouse" / "hold"

    @property
    def window(self) -> tuple[datetime, datetime]:
        return WINDOW_START, WINDOW_START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)

    @property
    def scripted_window(self) -> tuple[datetime, datetime]:
        """The scripted recorder's last segment: the one its first person walks into."""
        end = WINDOW_START + timedelta(seconds=SCRIPT_SEGMENT_SECONDS * SCRIPT_SEGMENTS)
        return end - timedelta(seconds=SCRIPT_SEGMENT_SECONDS), end

    def data_dir(self, role: str) -> Path:
        return self.base / role / "data"

    def logs(self) -> Path:
        return self.base / "logs"

    # environments
    def env(self, role: str, **extra: str) -> dict[str, str]:
        """A process's environment: the machine's, minus any Prefect/nvrflow setting, plus the cluster's."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NVRFLOW_"))}
        home = self.base / role
        env = keep | {
            "PATH": f"{Path(sys.executable).parent}:{keep.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(PROJECT_ROOT),
            "NVRFLOW_ROOT": str(PROJECT_ROOT),
            "NVRFLOW_DATA": str(self.data_dir(role)),
            "NVRFLOW_CLUSTER": self.network.prefix,
            "NVRFLOW_HOST": role,
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_AUTH_STRING": str(self.auth_string),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_LOCAL_STORAGE_PATH": str(self.results),
            "NVRFLOW_OUTBOX": str(self.outbox),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        return env | extra

    # processes
    def spawn(self, role: str, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.logs().mkdir(parents=True, exist_ok=True)
        with open(self.logs() / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                self.network.hosts[role].argv(argv),
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs() / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_port(self, name: str, role: str, port: int, timeout: float = START_TIMEOUT_S) -> None:
        process = self.processes[name]
        try:
            wait_for_port(port, timeout, host=self.address(role), alive=lambda: process.poll() is None)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(
                f"{name} did not start: {exc}\n--- {name}.log ---\n{self.log_tail(name)}"
            ) from exc

    def stop(self, name: str, timeout: float = 30) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def run(
        self, role: str | None, argv: list[str], what: str, timeout: float = CALL_TIMEOUT_S, **env: str
    ) -> str:
        """A command to completion, in a host (or, with role None, in the test's namespace)."""
        full = self.network.hosts[role].argv(argv) if role else argv
        done = subprocess.run(
            full,
            cwd=PROJECT_ROOT,
            env=self.env(role or "client", **env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    # workers
    def start_worker(self, role: str) -> None:
        """The host's worker started, and online: the server saw its heartbeat after the start."""
        from prefect.client.orchestration import get_client

        prefect = str(Path(sys.executable).parent / "prefect")
        self.data_dir(role).mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC) - timedelta(seconds=1)
        process = self.spawn(
            role, role,
            [prefect, "worker", "start", "--pool", POOL, "--limit", str(WORKERS[role]), "--name", role],
            self.env(role),
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                for worker in client.read_workers_for_work_pool(POOL):
                    seen = worker.last_heartbeat_time
                    if worker.name == role and worker.status == "ONLINE" and seen and seen >= started:
                        return
                if process.poll() is not None:
                    raise RuntimeError(f"worker {role} exited\n{self.log_tail(role)}")
                time.sleep(0.5)
        raise RuntimeError(f"worker {role} not online within {START_TIMEOUT_S} s\n{self.log_tail(role)}")

    def stop_worker(self, role: str) -> None:
        self.stop(role)

    def worker_running(self, role: str) -> bool:
        process = self.processes.get(role)
        return process is not None and process.poll() is None

    def kill_host(self, role: str) -> list[int]:
        """SIGKILL every process in the host's namespace (a machine losing power); their pids."""
        killed = hosts.sigkill_namespace(self.network.hosts[role].netns)
        process = self.processes.pop(role, None)
        if process is not None:
            process.wait(timeout=10)  # reaped
        return killed

    # PostgreSQL
    @property
    def pg_dir(self) -> Path:
        return self.base / "pg"

    def as_postgres(self, argv: list[str]) -> list[str]:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]

    def pg_ctl(self, action: str, timeout: float = 90) -> None:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.pg_dir / "data"), "-w", "-t", str(int(timeout))]
        if action in ("start", "restart"):
            argv += ["-l", str(self.pg_dir / "postgres.log")]
        if action in ("stop", "restart"):
            argv += ["-m", "fast"]
        self.run("server", self.as_postgres([*argv, action]), f"pg_ctl {action}", timeout=timeout + 30)

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://prefect:{self.pg_password}@{self.address('server')}:{PG_PORT}/prefect"

    def prefect_server_argv(self) -> list[str]:
        prefect = str(Path(sys.executable).parent / "prefect")
        return [prefect, "server", "start", "--host", self.address("server"), "--port", str(PREFECT_PORT)]

    def prefect_server_env(self) -> dict[str, str]:
        return self.env(
            "server",
            PREFECT_API_DATABASE_CONNECTION_URL=self.database_url,
            PREFECT_SERVER_API_AUTH_STRING=str(self.auth_string),
            PREFECT_UI_ENABLED="false",
            # Leases kept on the server host's disk: the default, in memory, forgets every lease
            # when the server restarts, and a slot held then is never given back.
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        )

    def start_prefect_server(self) -> None:
        self.spawn("server", "prefect-server", self.prefect_server_argv(), self.prefect_server_env())
        self.wait_healthy()

    def restart_prefect_server(self) -> None:
        self.stop("prefect-server")
        self.start_prefect_server()

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        process = self.processes["prefect-server"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"Prefect server not healthy\n{self.log_tail('prefect-server')}")


def _setup_postgres(cluster: Cluster) -> None:
    pg = cluster.pg_dir
    pg.mkdir(mode=0o700)
    shutil.chown(pg, "postgres", "postgres")
    pwfile = pg / "pwfile"
    pwfile.write_text(str(cluster.pg_password))
    pwfile.chmod(0o600)
    shutil.chown(pwfile, "postgres", "postgres")
    cluster.run(
        None,
        cluster.as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(pg / "data"), "-U", "prefect", f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"]
        ),
        "initdb",
    )  # fmt: skip
    pwfile.unlink()
    address = cluster.address("server")
    with open(pg / "data" / "postgresql.conf", "a") as conf:
        # Only the server host's address; the socket in our own folder (0700, postgres only).
        conf.write(f"listen_addresses = '{address}'\nport = {PG_PORT}\nunix_socket_directories = '{pg}'\n")
        conf.write("max_connections = 200\nfsync = off\n")
    with open(pg / "data" / "pg_hba.conf", "a") as hba:
        hba.write(f"host all prefect {address}/32 scram-sha-256\n")
    cluster.pg_ctl("start")
    cluster.run(
        "server",
        cluster.as_postgres(
            [str(PG_BIN / "createdb"), "-h", str(pg), "-p", str(PG_PORT), "-U", "prefect", "prefect"]
        ),
        "createdb",
    )


def _recorder_spec(
    cluster: Cluster, rec: Recorder, segments: int, seconds: int = SEGMENT_SECONDS, script: str = ""
) -> dict:
    start, _end = cluster.window
    channel = {"id": 1, "scene": "coffee", "codec": "h264", "audio": "none"}
    return {
        "name": rec.name,
        "port": rec.port,
        "username": "admin",
        "password": str(cluster.recorder_password),
        "segment_seconds": seconds,
        "recording_start": start.replace(tzinfo=None).isoformat(),
        "recording_end": (start + timedelta(seconds=seconds * segments)).replace(tzinfo=None).isoformat(),
        "channels": [channel | {"script": script} if script else channel],
    }


def _spec(cluster: Cluster, role: str, first_index: int) -> dict:
    recorders = []
    for i in range(RECORDERS_PER_HOST):
        rec = Recorder(
            f"fleet-{role[-1]}{i + 1}", cluster.address(role), 8001 + i, recorder_limit(first_index + i)
        )
        cluster.recorders.append(rec)
        recorders.append(_recorder_spec(cluster, rec, SEGMENTS))
    if role == RECORDER_HOSTS[-1]:
        # One segment each, for the outage tests: a download made slow enough to outlast a restart.
        for i, outage in enumerate(OUTAGES):
            rec = Recorder(f"slow-{outage}", cluster.address(role), 8101 + i, 1)
            cluster.slow_recorders[outage] = rec
            recorders.append(_recorder_spec(cluster, rec, 1))
        for i, (name, segments) in enumerate(SINGLE_USE.items()):
            rec = Recorder(name, cluster.address(role), 8201 + i, 1)
            cluster.single_use[name] = rec
            recorders.append(_recorder_spec(cluster, rec, segments))
    return {"host": cluster.address(role), "width": 320, "height": 240, "fps": 10, "recorders": recorders}


def _scripted_spec(cluster: Cluster) -> dict:
    role = RECORDER_HOSTS[0]
    rec = cluster.scripted = Recorder(SCRIPTED, cluster.address(role), SCRIPTED_PORT, 1)
    spec = _recorder_spec(cluster, rec, SCRIPT_SEGMENTS, SCRIPT_SEGMENT_SECONDS, SCRIPT)
    return {"host": rec.host, "width": 640, "height": 360, "fps": 10, "recorders": [spec]}


def _all_recorders(cluster: Cluster) -> list[Recorder]:
    scripted = [cluster.scripted] if cluster.scripted else []
    return [*cluster.recorders, *cluster.slow_recorders.values(), *cluster.single_use.values(), *scripted]


def _start_services(cluster: Cluster) -> None:
    import json

    from stack.models import ensure_models

    py = sys.executable
    services = cluster.address("services")
    (cluster.base / "services").mkdir()
    cluster.hold_file.parent.mkdir()
    cluster.outbox.mkdir(parents=True)
    cluster.spawn(
        "clickhouse",
        "clickhouse-gateway",
        [py, "-m", "stack.clickhouse_gateway", "--host", cluster.address("clickhouse"), "--port", str(GATEWAY_PORT),
         "--data-dir", str(cluster.base / "clickhouse" / "data"), "--password-env", "NVRFLOW_CLICKHOUSE_PASSWORD",
         "--hold-file", str(cluster.hold_file)],
        cluster.env("clickhouse", NVRFLOW_CLICKHOUSE_PASSWORD=str(cluster.clickhouse_password)),
    )  # fmt: skip
    cluster.spawn(
        "services",
        "model-server",
        [py, "-m", "stack.model_server", "--host", services, "--port", str(MODEL_PORT),
         *(f"--model={name}={path}" for name, path in ensure_models().items())],
        cluster.env("services"),
    )  # fmt: skip
    simulators = [
        (role, f"simulator-{role}", _spec(cluster, role, n * RECORDERS_PER_HOST))
        for n, role in enumerate(RECORDER_HOSTS)
    ]
    simulators.append((RECORDER_HOSTS[0], f"simulator-{SCRIPTED}", _scripted_spec(cluster)))
    for role, name, spec in simulators:
        spec_file = cluster.base / f"{name}-spec.json"
        spec_file.write_text(json.dumps(spec))
        spec_file.chmod(0o600)
        cluster.spawn(role, name, [py, "-m", "stack.simulator", "--spec", str(spec_file)], cluster.env(role))


def _wait_services(cluster: Cluster) -> None:
    cluster.wait_port("clickhouse-gateway", "clickhouse", GATEWAY_PORT)
    cluster.wait_port("model-server", "services", MODEL_PORT)
    for role in RECORDER_HOSTS:
        for rec in _all_recorders(cluster):
            if rec.host == cluster.address(role):
                name = f"simulator-{SCRIPTED}" if rec is cluster.scripted else f"simulator-{role}"
                cluster.wait_port(name, role, rec.port)


def _register(cluster: Cluster) -> None:
    """What stack/register.py and supervisor.start do for one host, against the cluster's server."""
    from openpyxl import Workbook
    from prefect.filesystems import LocalFileSystem
    from pydantic import SecretStr

    from blocks.clickhouse import ClickHouseSink
    from core.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK, DEFAULT_VIDEO_STORE_BLOCK
    from deployments.sample_inventory import HEADER
    from flows.inventory import sync_inventory
    from stack.models import CLASSIFIER_BLOCK, model_blocks

    prefect = str(Path(sys.executable).parent / "prefect")
    cluster.run(None, [prefect, "block", "register", "-m", "blocks"], "prefect block register")
    sink = ClickHouseSink(url=cluster.clickhouse_url, password=SecretStr(str(cluster.clickhouse_password)))
    sink.save(DEFAULT_SINK_BLOCK, overwrite=True)
    with sink.connect() as writer:
        writer.migrate()
    models = model_blocks(cluster.model_target)  # the stack's: {nvrflow: detector, imagenet: classifier}
    models[CLASSIFIER_BLOCK].save(DEFAULT_MODEL_BLOCK, overwrite=True)
    models[DEFAULT_MODEL_BLOCK].save(DETECTOR_BLOCK, overwrite=True)
    cluster.store.mkdir(parents=True)
    LocalFileSystem(basepath=str(cluster.store)).save(DEFAULT_VIDEO_STORE_BLOCK, overwrite=True)

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for rec in _all_recorders(cluster):
        sheet.append(
            [
                rec.name,
                rec.host,
                rec.port,
                "admin",
                str(cluster.recorder_password),
                "1",
                rec.limit,
                "fleet",
                "yes",
            ]
        )
    workbook = cluster.base / "client" / "inventory.xlsx"
    book.save(workbook)
    workbook.chmod(0o600)
    sync_inventory(str(workbook))

    cluster.run(
        None,
        [sys.executable, "-m", "work_pools.setup", "--pool", POOL, "--root", str(PROJECT_ROOT),
         "--heartbeat", str(HEARTBEAT_S), "--zombie-window", str(ZOMBIE_WINDOW_S)],
        "work pool setup",
    )  # fmt: skip
    _data_folder_per_host()
    cluster.run(None, [prefect, "--no-prompt", "deploy", "--all"], "prefect deploy")
    _pause_schedules()


def _data_folder_per_host() -> None:
    """The pool's NVRFLOW_DATA removed: each worker's flow runs use the worker host's own folder.

    On machines of their own, one path in the pool (/var/lib/nvrflow) is a folder on each
    machine; here the hosts share one file system, so that one path would be one folder for
    all. Each worker is started with its host's NVRFLOW_DATA instead, which its flow runs inherit.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    with get_client(sync_client=True) as client:
        template = client.read_work_pool(POOL).base_job_template
        env = template["variables"]["properties"]["env"]
        env["default"] = {k: v for k, v in (env.get("default") or {}).items() if k != "NVRFLOW_DATA"}
        client.update_work_pool(POOL, WorkPoolUpdate(base_job_template=template))
        saved = client.read_work_pool(POOL).base_job_template["variables"]["properties"]["env"]["default"]
    assert "NVRFLOW_DATA" not in saved and saved.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") == str(
        HEARTBEAT_S
    ), saved


def _pause_schedules() -> None:
    """No scheduled run (the outbox flush every 10 minutes) lands in the middle of a test."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        paused = []
        for deployment in client.read_deployments():
            for schedule in deployment.schedules:
                if schedule.active:
                    client.update_deployment_schedule(deployment.id, schedule.id, active=False)
                    paused.append(deployment.id)
        if paused:  # and the runs the scheduler may have made already
            for run in client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=paused)),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
                ),
            ):
                client.delete_flow_run(run.id)


def _start_workers(cluster: Cluster) -> None:
    for role in WORKERS:
        cluster.start_worker(role)


def _start_review_app(cluster: Cluster) -> None:
    """The review app on its host's address, on the saved sink and store blocks (read at start)."""
    cluster.spawn(
        "review",
        "review-app",
        [sys.executable, "-m", "review", "--host", cluster.address("review"), "--port", str(REVIEW_PORT)],
        cluster.env("review", NVRFLOW_REVIEW_PASSWORD=str(cluster.review_password)),
    )
    cluster.wait_port("review-app", "review", REVIEW_PORT)


def _client_settings(cluster: Cluster, stack: ExitStack) -> None:
    """The test process is a client of the cluster: its environment and Prefect's settings say so."""
    env = cluster.env("client")
    for key in [k for k in os.environ if k.startswith(("PREFECT_", "NVRFLOW_"))]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith(("PREFECT_", "NVRFLOW_"))})
    cluster.data_dir("client").mkdir(parents=True, exist_ok=True)

    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )

    stack.enter_context(
        temporary_settings(
            updates={
                PREFECT_API_URL: cluster.api_url,
                PREFECT_API_AUTH_STRING: str(cluster.auth_string),
                PREFECT_HOME: env["PREFECT_HOME"],
                PREFECT_LOCAL_STORAGE_PATH: env["PREFECT_LOCAL_STORAGE_PATH"],
                PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
            }
        )
    )


def _teardown(cluster: Cluster) -> None:
    # Workers first, so that they take no new run while the rest goes down.
    for name in [*WORKERS, "prefect-server"]:
        cluster.stop(name)
    if (cluster.pg_dir / "data" / "postmaster.pid").exists():
        try:
            cluster.pg_ctl("stop", timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass  # the namespace cleanup below kills what is left
    for name in list(cluster.processes):
        cluster.stop(name)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster tests need root (network namespaces, the postgres user)")
    removed = hosts.remove_leftovers()
    for prefix in removed:
        for folder in Path(tempfile.gettempdir()).glob(f"{prefix}-cluster-*"):
            shutil.rmtree(folder, ignore_errors=True)
    if removed:
        print(f"removed leftovers of earlier runs: {removed}")
    # A CI timeout sends SIGTERM: raise in the test so that the cleanup below still runs.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    network = hosts.Network.create(ROLES)
    base = Path(tempfile.mkdtemp(prefix=f"{network.prefix}-cluster-"))
    base.chmod(0o711)  # postgres must reach its folder inside
    cluster = Cluster(
        network, base, Secret(f"nvrflow:{_secret()}"), _secret(), _secret(), _secret(12), _secret()
    )
    ok = False
    with ExitStack() as stack:
        try:
            _setup_postgres(cluster)
            _start_services(cluster)
            cluster.start_prefect_server()
            _wait_services(cluster)
            _client_settings(cluster, stack)
            _register(cluster)
            _start_workers(cluster)
            _start_review_app(cluster)
            yield cluster
            ok = request.session.testsfailed == 0
        finally:
            try:
                _teardown(cluster)
            finally:
                signal.signal(signal.SIGTERM, previous)
                network.destroy()
                if ok:
                    shutil.rmtree(base, ignore_errors=True)
                else:
                    print(f"cluster logs kept in {base / 'logs'}")
