"""A worker machine dies under a running pipeline: the run is Crashed, run again, and completes.

The stack runs a second worker of the pool ("worker-b"); the test kills, with SIGKILL, the
worker that picked the run up and every process of the run (what a machine losing power
does), once while a download is in flight, once between a ClickHouse insert and its reply
(the stack's gateway is swapped for one started with `--hold-file`, which executes an insert
and withholds the reply while the file exists: the rows are in, the task never learns it). Nothing is left to report the run: it stays Running
until the zombie automation (no heartbeat for the window) marks it Crashed; the re-run
automation schedules it again, the surviving worker runs it to Completed. The killed run's
recorder slots come back when their leases expire.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from uuid import UUID

import pytest

from stack.simulator.spec import DEMO_SEGMENT_SECONDS, demo_window
from tests.polling import wait_until
from tests.support import CLASSIFIER, register_alias, run_processes, simulated_port

pytestmark = pytest.mark.stack

# A recorder of this test's own on nvr-03's simulated device: its rows are this test's alone.
SIMULATED = "nvr-03"
RECORDER = "crash-03"  # and f"{RECORDER}-insert" for the insert moment
ZOMBIE_MESSAGE = "Flow run marked as crashed due to missing heartbeats."
SPARE = "worker-b"


def _kill_all(flow_run_id: UUID) -> dict[int, int]:
    """SIGKILL every process carrying the run's id; returns the ones that were still there."""
    found = run_processes(flow_run_id)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


@pytest.fixture
def two_workers(stack):
    """The stack's worker and a spare one; afterwards the stack has its one worker again."""
    from stack import supervisor
    from stack.state import load_state

    supervisor.start_worker(load_state(stack.data_dir), SPARE)
    try:
        yield
    finally:
        state = load_state(stack.data_dir)
        if "worker" not in state.pids or not supervisor._alive(state.pids["worker"]):
            state.pids.pop("worker", None)
            supervisor.start_worker(state, "worker")
        if SPARE in state.pids:
            supervisor.stop_service(SPARE, stack.data_dir)


@pytest.fixture
def holding_gateway(stack):
    """The stack's ClickHouse gateway replaced, on its port and data, by one with `--hold-file`."""
    from stack.supervisor import start_service, stop_service
    from tests.gateway_process import Gateway

    hold = stack.data_dir / "stack" / "clickhouse-hold"
    stop_service("clickhouse-gateway", stack.data_dir)
    gateway = Gateway(
        stack.data_dir / "clickhouse", stack.clickhouse_password, stack.gateway_port, hold_file=hold
    )
    try:
        gateway.start()
        yield hold
    finally:
        hold.unlink(missing_ok=True)
        gateway.stop()
        start_service("clickhouse-gateway", stack.data_dir)


_KILLED = dict(
    state="Crashed (no heartbeat for 90 s), run again, Completed",
    message="`Flow run marked as crashed due to missing heartbeats.`, then the re-run's Completed",
)


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param("download", marks=pytest.mark.faults(
            fault="worker SIGKILLed mid-download (single host, two workers)",
            data="every segment once; the recorder's slots back", **_KILLED)),
        pytest.param("insert", marks=pytest.mark.faults(
            fault="worker SIGKILLed between an insert and its reply (single host, two workers)",
            data="every segment once: the re-run's insert is deduplicated by its token", **_KILLED)),
    ],
)  # fmt: skip
def test_killed_worker_machine_run_is_crashed_rerun_and_completed(stack, two_workers, request, moment):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from blocks.clickhouse import ClickHouseSink
    from flows.export import limit_name
    from stack import supervisor
    from stack.simulator import control
    from stack.state import load_state

    # The segment after the demo window on both channels: no other test downloads it.
    _, start = demo_window()
    end = start + timedelta(seconds=DEMO_SEGMENT_SECONDS)
    port = simulated_port(stack, SIMULATED)
    recorder = RECORDER if moment == "download" else f"{RECORDER}-insert"
    register_alias(stack, SIMULATED, recorder)
    control.reset_stats(port)
    hold = request.getfixturevalue("holding_gateway") if moment == "insert" else None
    if hold is None:
        # ~20 kB/s: a download lasts long enough to be caught in flight.
        control.set_faults(port, bandwidth_bps=20_000)
    else:
        hold.touch()
    try:
        flow_run = run_deployment(
            "recorder-pipeline/recorder",
            parameters={
                "recorder": recorder,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "model_block": CLASSIFIER,
            },
            timeout=0,
        )
        if hold is None:
            wait_until("a download in flight", lambda: control.stats(port)["active_downloads"] > 0, 240)
        else:
            held = hold.with_name(hold.name + ".held")
            wait_until("an insert done, its reply held", lambda: held.exists() and held.read_text(), 240)

        processes = run_processes(flow_run.id)
        assert processes, "no process carries the flow run's id"
        # The run's own process is the one whose parent is not a process of the run: a worker.
        parents = {ppid for pid, ppid in processes.items() if ppid not in processes}
        assert len(parents) == 1, processes
        worker_pid = parents.pop()
        state = load_state(stack.data_dir)
        killed = next(name for name, pid in state.pids.items() if pid == worker_pid)
        assert killed in ("worker", SPARE), (killed, state.pids)

        # The machine goes: its worker first (so nothing reports the run), then every process of
        # the run, again until none is left (one may have started a child meanwhile: an ffprobe).
        os.kill(worker_pid, signal.SIGKILL)
        wait_until("every process of the run killed", lambda: not _kill_all(flow_run.id), 10, every=0.1)
        killed_at = time.monotonic()
        supervisor.stop_service(killed, stack.data_dir)  # reaped, and out of the stack's pids
    finally:
        control.reset_faults(port)
        if hold is not None:
            hold.unlink(missing_ok=True)  # the re-run's inserts are answered
    assert not run_processes(flow_run.id)

    with get_client(sync_client=True) as client:

        def states():
            return sorted(client.read_flow_run_states(flow_run.id), key=lambda s: s.timestamp)

        assert client.read_flow_run(flow_run.id).state_name == "Running"
        crashed = wait_until("the run marked Crashed", lambda: [s for s in states() if s.is_crashed()], 180)
        crashed_at = time.monotonic()
        assert crashed[0].message == ZOMBIE_MESSAGE, crashed[0].message
        wait_until("the crashed run scheduled again", lambda: states()[-1].name != "Crashed", 60)

        def final():
            run = client.read_flow_run(flow_run.id)
            return run if run.state is not None and run.state.is_final() and run.run_count > 1 else None

        run = wait_until("the run run again to a final state", final, 420, every=1)
        completed_at = time.monotonic()
        assert run.state is not None
        assert run.state.is_completed(), (run.state.name, run.state.message)
        history = [s.name for s in states()]
        first_crash = history.index("Crashed")
        assert history[first_crash + 1] == "Scheduled", history
        assert history.count("Crashed") == 1, history
        assert run.run_count == 2, history

        limit = client.read_global_concurrency_limit_by_name(limit_name(recorder))
        assert limit.active_slots == 0, limit

    names = {s["name"] for s in control.segments(port)}
    with ClickHouseSink.load("nvrflow").connect() as ch:
        rows = ch.query(
            "SELECT channel, segment, count() FROM {db}.segments WHERE recorder = {rec:String} "
            "AND start >= {start:DateTime64(3, 'UTC')} AND start < {end:DateTime64(3, 'UTC')} "
            "GROUP BY channel, segment ORDER BY channel",
            {"rec": recorder, "start": start.replace(tzinfo=None), "end": end.replace(tzinfo=None)},
        )
        detections = ch.query(
            "SELECT count(), uniqExact(channel, segment, frame_time, rank) FROM {db}.detections "
            "WHERE recorder = {rec:String} AND segment IN {segs:Array(String)}",
            {"rec": recorder, "segs": [r[1] for r in rows]},
        )[0]
    # One segment a channel in the window, each persisted exactly once (no FINAL).
    assert [(r[0], r[2]) for r in rows] == [(1, 1), (2, 1)], rows
    assert {r[1] for r in rows} <= names
    assert detections[0] == detections[1] > 0, detections

    print(
        f"\nkill -> Crashed {crashed_at - killed_at:.1f} s, Crashed -> Completed "
        f"{completed_at - crashed_at:.1f} s, kill -> Completed {completed_at - killed_at:.1f} s "
        f"(worker killed: {killed})"
    )
