"""What several stack tests read the same way: the stack's ClickHouse, a simulated recorder's port,
what the Prefect API holds about a flow run (its logs, its task runs), a webhook receiver."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from stack.simulator.spec import load_spec
from tests.polling import wait_until

# The classifier's block on the stack (stack/models.py): tests that check ImageNet labels name it.
CLASSIFIER = "imagenet"

if TYPE_CHECKING:
    from blocks.clickhouse import ClickHouseWriter


def sink() -> ClickHouseWriter:
    """A connection to the stack's ClickHouse through the `nvrflow` sink block (a context manager)."""
    from blocks.clickhouse import ClickHouseSink

    return ClickHouseSink.load("nvrflow").connect()


def simulated_port(stack, name: str) -> int:
    """The port of one of the stack's simulated recorders (nvr-01 ...)."""
    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    return next(r.port for r in spec.recorders if r.name == name)


def register_alias(stack, simulated: str, name: str) -> None:
    """The recorder block `name` for the simulated device `simulated`: its downloads, files and rows
    are kept under `name`, so a test that needs them fresh has them whatever other tests ran."""
    from pydantic import SecretStr

    from blocks.recorder import HikvisionRecorder
    from flows.recorders import upsert_recorder

    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    device = next(r for r in spec.recorders if r.name == simulated)
    block = HikvisionRecorder(host="127.0.0.1", port=device.port, username=device.username,
                              password=SecretStr(device.password), channels=[c.id for c in device.channels])  # fmt: skip
    upsert_recorder(name, block)  # and offered in the run form, which the server checks


def run_logs(flow_run_id: UUID, containing: str = "", timeout: float = 60) -> list[str]:
    """The flow run's log messages (its tasks' too) as the Prefect API holds them, oldest first.

    Logs reach the API in batches after the fact: with `containing`, waits until one of them holds it
    (an AssertionError naming it if none does in time).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    def read() -> list[str]:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                sort=LogSort.TIMESTAMP_ASC,
                limit=200,
            )
        return [log.message for log in logs]

    if not containing:
        return read()
    found: list[str] = []

    def holds() -> bool:
        found[:] = read()
        return any(containing in message for message in found)

    wait_until(f"a log line of flow run {flow_run_id} with {containing!r}", holds, timeout, every=1)
    return found


def task_runs(flow_run_id: UUID, name_prefix: str) -> list:
    """The flow run's task runs whose name starts with `name_prefix` (e.g. "check model")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [run for run in runs if run.name.startswith(name_prefix)]


def final_runs(run_ids: list[UUID], timeout: float) -> list:
    """The flow runs once every one of them is in a final state (in the order given)."""
    from prefect.client.orchestration import get_client

    def read() -> list | None:
        with get_client(sync_client=True) as client:
            runs = [client.read_flow_run(run_id) for run_id in run_ids]
        return runs if all(r.state is not None and r.state.is_final() for r in runs) else None

    return wait_until(f"flow runs {run_ids} final", read, timeout, every=2)


def state_names(flow_run_id: UUID) -> list[str]:
    """The names of every state the flow run went through, oldest first."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    return [s.name or s.type.value for s in sorted(states, key=lambda s: s.timestamp)]


def pipeline_runs_of(recorder: str, since: datetime) -> list:
    """The recorder's `recorder-pipeline/recorder` runs created since `since`, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
        )
    mine = [r for r in runs if (r.parameters or {}).get("recorder") == recorder and r.created >= since]
    return sorted(mine, key=lambda r: r.created)


def run_processes(flow_run_id: UUID) -> dict[int, int]:
    """pid -> parent pid of every process started for the flow run (its environment names it)."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def revive_worker(stack) -> bool:
    """Start the stack's worker again if it has exited; True if it had to.

    Prefect 3.8.8's worker exits when a run it was running comes back as Scheduled (the crash
    automation re-running a crashed run); in production its systemd unit restarts it.
    """
    from stack import supervisor
    from stack.state import load_state

    state = load_state(stack.data_dir)
    pid = state.pids.get("worker")
    if pid is not None and supervisor._alive(pid):
        return False
    state.pids.pop("worker", None)
    supervisor.start_worker(state, "worker")
    return True


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, queue.Queue[dict]]]:
    """A webhook endpoint on loopback that keeps every JSON body posted to it: (its URL, the bodies)."""
    from stack.ports import HOST, free_port

    got: queue.Queue[dict] = queue.Queue()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got.put(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    server = ThreadingHTTPServer((HOST, free_port()), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def next_message_about(got: queue.Queue[dict], needle: str, timeout_s: float = 180) -> dict:
    """The first message whose subject mentions `needle` (others, e.g. from other runs, are skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = got.get(timeout=max(deadline - time.monotonic(), 0.1))
        if needle in message.get("subject", ""):
            return message
