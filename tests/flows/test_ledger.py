"""Recorder-hours as partitions: scheduled runs that start late each do their own hour, the ledger
records every complete hour once, and backfill starts exactly the hours that are missing."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from stack.simulator import control
from tests.own_recorder import one_channel_spec, register
from tests.support import stack_clickhouse

pytestmark = pytest.mark.stack

DAY = datetime(2026, 11, 4, tzinfo=UTC)
# Four 4 s segments across the 03:00 -> 04:00 boundary: two in hour 03, two in hour 04.
RECORDING_START = DAY.replace(hour=3, minute=59, second=52)
RECORDING_END = DAY.replace(hour=4, minute=0, second=8)


def _ledger(recorder: str) -> list[tuple[datetime, int]]:
    with stack_clickhouse() as ch:
        rows = ch.query(
            "SELECT hour, segments FROM {db}.windows WHERE recorder = {r:String} ORDER BY hour",
            {"r": recorder},
        )
    return [(hour.replace(tzinfo=UTC), n) for hour, n in rows]


def _counts(recorder: str) -> tuple[int, int]:
    with stack_clickhouse() as ch:
        where = {"r": recorder}
        return (
            ch.query("SELECT count() FROM {db}.segments WHERE recorder = {r:String}", where)[0][0],
            ch.query("SELECT count() FROM {db}.detections WHERE recorder = {r:String}", where)[0][0],
        )


@pytest.fixture
def stopped_worker(stack):
    """The stack's worker stopped, as on a machine that is down; `start()` brings it back."""
    from stack import supervisor
    from stack.state import load_state

    supervisor.stop_service("worker", stack.data_dir)
    started = []

    def start() -> None:
        supervisor.start_worker(load_state(stack.data_dir), "worker")
        started.append(True)

    try:
        yield start
    finally:
        if not started:
            start()


def test_three_late_hours_are_each_done_once_and_backfill_runs_only_the_missing_one(
    stack, tmp_path, stopped_worker
):
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from flows.backfill import backfill
    from flows.launch import wait_for_runs

    spec = one_channel_spec("ledger-01", RECORDING_START, RECORDING_END, 4)
    register(spec)

    with control.running(spec, tmp_path):
        # The hourly runs for 02:00, 03:00 and 04:00, scheduled at 03:05, 04:05, 05:05 while the
        # worker is down; they all start late, once it is back.
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
            runs = {
                f"{hour:02d}": client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={"recorder": "ledger-01"},
                    state=Scheduled(scheduled_time=DAY.replace(hour=hour + 1, minute=5)),
                ).id
                for hour in (2, 3, 4)
            }
        stopped_worker()
        assert wait_for_runs(runs, timeout_s=600) == {name: "Completed" for name in runs}
        hours = [DAY.replace(hour=h) for h in (2, 3, 4)]
        assert _ledger("ledger-01") == [(hours[0], 0), (hours[1], 2), (hours[2], 2)]
        # Every segment once, counted without FINAL: no hour was done twice.
        assert _counts("ledger-01") == (4, 4 * 4 * 5)

        # Hour 05:00 was never scheduled: backfill over 02:00-06:00 starts that one alone.
        result = backfill(DAY.replace(hour=2), DAY.replace(hour=6), recorders=["ledger-01"])
        assert result["missing"] == 1 and list(result["runs"]) == [
            f"ledger-01 {DAY.replace(hour=5).isoformat()}"
        ]
        started = {name: UUID(run_id) for name, run_id in result["runs"].items()}
        assert wait_for_runs(started, timeout_s=600) == {name: "Completed" for name in started}
        with get_client(sync_client=True) as client:
            (backfill_run,) = [client.read_flow_run(run_id) for run_id in started.values()]
        assert backfill_run.work_queue_name == "site-none-backfill"
        assert _ledger("ledger-01")[-1] == (DAY.replace(hour=5), 0)
        assert backfill(DAY.replace(hour=2), DAY.replace(hour=6), recorders=["ledger-01"])["missing"] == 0
    assert _counts("ledger-01") == (4, 4 * 4 * 5)
