"""What several stack tests read the same way: the stack's ClickHouse, a simulated recorder's port,
and what the Prefect API holds about a flow run (its logs, its task runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from stack.simulator.spec import load_spec
from tests.polling import wait_until

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
