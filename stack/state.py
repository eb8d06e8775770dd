"""The embedded stack's state file: ports, generated secrets and process ids.

Kept in `<data>/stack/state.json` (mode 0600: it holds the stack's own generated
passwords). Ports are chosen once and reused while they stay free, so the blocks that
point at them stay valid across `make down` / `make up`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stack import prefect_database
from stack.paths import PROJECT_ROOT, data_dir
from stack.ports import HOST, free_port, is_listening

RECORDER_COUNT = 3


@dataclass
class StackState:
    data_dir: Path
    prefect_port: int
    gateway_port: int
    model_port: int
    recorder_ports: list[int]
    clickhouse_password: str
    recorder_password: str
    pids: dict[str, int] = field(default_factory=dict)
    # The Prefect server's database password (stack/prefect_database.py); given only to the server.
    prefect_db_password: str = ""
    # The review app: its port and its login password (given to the app only, from this file).
    review_port: int = 0
    review_password: str = ""

    @property
    def file(self) -> Path:
        return state_file(self.data_dir)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def clickhouse_url(self) -> str:
        return f"http://{HOST}:{self.gateway_port}"

    @property
    def review_url(self) -> str:
        return f"http://{HOST}:{self.review_port}"

    @property
    def model_target(self) -> str:
        return f"{HOST}:{self.model_port}"

    def all_ports(self) -> list[int]:
        return [self.prefect_port, self.gateway_port, self.model_port, self.review_port, *self.recorder_ports]

    def save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        payload = asdict(self) | {"data_dir": str(self.data_dir)}
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, self.file)

    def env(self) -> dict[str, str]:
        """Environment for every process the stack starts and every client of it."""
        root = self.data_dir
        return {
            "NVRFLOW_DATA": str(root),
            # Tags every process of this stack, flow-run subprocesses included, so that
            # `down` can find and stop all of them.
            "NVRFLOW_STACK": str(root),
            "PREFECT_HOME": str(root / "prefect"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "results"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": str(
                prefect_database.SQLITE_LOG_BATCH_INTERVAL_S if prefect_database.is_sqlite() else 0.5
            ),
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            # The server looks for expired concurrency leases this often (Prefect's default 15 s):
            # a killed flow run's recorder slots come back at most lease (60 s) + 5 s after its
            # last renewal.
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
            # Leases on disk, not in the server's memory: a server restart must not forget a
            # held recorder slot (it would stay taken for good).
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(PROJECT_ROOT),
            "NVRFLOW_ROOT": str(PROJECT_ROOT),
            # Object events and artifacts link to the object's page in the review app.
            "NVRFLOW_REVIEW_URL": self.review_url,
        }


def state_file(root: Path) -> Path:
    return root / "stack" / "state.json"


def load_state(root: Path | None = None) -> StackState | None:
    root = (root or data_dir()).resolve()
    path = state_file(root)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["data_dir"] = root
    return StackState(**raw)


def _port_or_new(port: int | None) -> int:
    return port if port and not is_listening(port) else free_port()


def prepare_state(root: Path | None = None) -> StackState:
    """The state for a start: previous ports if still free, secrets kept (data depends on them)."""
    root = (root or data_dir()).resolve()
    previous = load_state(root)
    if previous is None:
        state = StackState(
            data_dir=root,
            prefect_port=free_port(),
            gateway_port=free_port(),
            model_port=free_port(),
            recorder_ports=[free_port() for _ in range(RECORDER_COUNT)],
            clickhouse_password=secrets.token_urlsafe(18),
            recorder_password=secrets.token_urlsafe(12),
        )
    else:
        state = previous
        state.prefect_port = _port_or_new(previous.prefect_port)
        state.gateway_port = _port_or_new(previous.gateway_port)
        state.model_port = _port_or_new(previous.model_port)
        state.recorder_ports = [_port_or_new(p) for p in previous.recorder_ports]
        state.pids = {}
    if not state.prefect_db_password:  # new, or a state file from before the stack used PostgreSQL
        state.prefect_db_password = secrets.token_urlsafe(18)
    state.review_port = _port_or_new(state.review_port)  # a state file from before the review app: none
    if not state.review_password:
        state.review_password = secrets.token_urlsafe(12)
    taken = state.all_ports()
    if len(set(taken)) != len(taken):
        raise RuntimeError(f"stack ports collide: {taken}; remove {state.file} and start again")
    return state
