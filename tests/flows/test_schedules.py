"""Per-recorder schedules: init / running / paused, one recorder at a time, catching up on resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from pydantic import SecretStr

from stack.simulator.spec import load_spec
from tests.polling import wait_until

pytestmark = pytest.mark.stack


def _scheduled_runs(deployment: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    name = deployment.split("/", 1)[1]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
    return len(runs)


def test_pausing_one_recorder_stops_its_runs_only_and_resuming_catches_up(stack):
    from blocks.recorder import HikvisionRecorder
    from core.windows import Window
    from flows.launch import wait_for_runs
    from flows.recorders import upsert_recorder
    from flows.schedules import deployment_name, ensure_recorder_schedule, resume, set_active, state_of

    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    nvr = next(r for r in spec.recorders if r.name == "nvr-01")
    for name in ("sched-01", "sched-02"):
        upsert_recorder(name, HikvisionRecorder(host="127.0.0.1", port=nvr.port, username=nvr.username,
                                                password=SecretStr(nvr.password), channels=[1]))  # fmt: skip
        assert state_of(name)[0] == "init"
        made = ensure_recorder_schedule(name, "5 * * * *")
        assert made[-1] == f"{deployment_name(name)}: created, 5 * * * * (running)", made
        assert ensure_recorder_schedule(name, "5 * * * *") == []  # idempotent
        assert state_of(name)[0] == "running"
    for name in ("sched-01", "sched-02"):  # the scheduler's loop makes each one's runs in its own time
        wait_until(
            f"{name}'s scheduled runs",
            lambda name=name: _scheduled_runs(deployment_name(name)) > 0,
            120,
            every=1,
        )

    set_active("sched-01", False)
    assert state_of("sched-01")[0] == "paused" and state_of("sched-02")[0] == "running"
    wait_until(
        "sched-01's runs to go", lambda: _scheduled_runs(deployment_name("sched-01")) == 0, 120, every=1
    )
    assert _scheduled_runs(deployment_name("sched-02")) > 0
    # An inventory sync of an enabled recorder leaves the operator's pause alone (it may bring the
    # deployment's run form up to date: sched-02 joined the recorders offered since).
    synced = ensure_recorder_schedule("sched-01", "5 * * * *")
    assert not [line for line in synced if "schedule" in line or "paused" in line], synced
    assert state_of("sched-01")[0] == "paused"

    # Resumed: running again, and the two hours before the live one are caught up from the ledger.
    live_start = Window.live(datetime.now(UTC)).start
    caught = resume("sched-01", since=live_start - timedelta(hours=2))
    assert state_of("sched-01")[0] == "running"
    assert caught["missing"] == 2, caught
    runs = {name: UUID(run_id) for name, run_id in caught["runs"].items()}
    assert wait_for_runs(runs, timeout_s=600) == {name: "Completed" for name in runs}
    assert resume("sched-01", since=live_start - timedelta(hours=2))["missing"] == 0
    set_active("sched-01", False)
    set_active("sched-02", False)
