"""A worker host dies (every process in its namespace SIGKILLed) in the middle of a run: once
while a download is in flight, once between a ClickHouse insert and its acknowledgment.

Nothing is left to report the run, so it stays Running until the zombie automation (no
heartbeat for 60 s, heartbeats every 30 s) marks it Crashed; the re-run automation schedules
it again and the surviving worker host runs it to Completed. Its recorder slot (limit 1)
comes back when the dead run's lease expires, and ClickHouse holds every segment and
detection of the window once.

How the moments are caught:
- download: the recorder's bandwidth is cut so that a segment takes ~30 s; the kill comes when
  the simulator counts a download in flight (and the recorder's slot is held, read via the API).
- insert: the ClickHouse gateway runs with `--hold-file`; while the file exists it executes an
  INSERT and withholds its reply, noting the client's address. The kill comes once it notes
  one from the run's worker host while the run's persist task is Running: the rows are in
  ClickHouse, the task never learns it. The re-run inserts them again under the same
  deduplication tokens, which must add nothing.
"""

from __future__ import annotations

import time

import pytest

from flows.export import limit_name
from stack.simulator import control
from tests.cluster import ops
from tests.cluster.conftest import WORKERS, ZOMBIE_WINDOW_S
from tests.polling import wait_until

pytestmark = pytest.mark.cluster

ZOMBIE_MESSAGE = "Flow run marked as crashed due to missing heartbeats."
DOWNLOAD_SECONDS = 30


@pytest.fixture
def workers_back(cluster):
    """Both workers before the test and after it, whatever it killed."""
    ops.all_workers(cluster)
    yield
    ops.all_workers(cluster)


def _slots(recorder: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(limit_name(recorder)).active_slots


_KILLED = dict(
    state="Crashed (no heartbeat for 90 s), run again on the other host, Completed",
    message="`Flow run marked as crashed due to missing heartbeats.`, then the re-run's Completed",
)


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param("download", marks=pytest.mark.faults(
            fault="worker host killed mid-download (cluster)", data="every segment once", **_KILLED)),
        pytest.param("insert", marks=pytest.mark.faults(
            fault="worker host killed between an insert and its reply (cluster)",
            data="every segment once: the re-run's insert is deduplicated by its token", **_KILLED)),
    ],
)  # fmt: skip
def test_a_dead_worker_host_run_is_crashed_and_completed_on_the_other(cluster, workers_back, moment):
    rec = cluster.single_use[f"crash-{moment}"]
    segments = control.segments(rec.port, host=rec.host)
    names = {s["name"] for s in segments}
    held = cluster.hold_file.with_name(cluster.hold_file.name + ".held")
    held.unlink(missing_ok=True)
    if moment == "download":
        control.set_faults(
            rec.port, host=rec.host, bandwidth_bps=max(1, segments[0]["size"] // DOWNLOAD_SECONDS)
        )
    else:
        cluster.hold_file.touch()
    try:
        run_id = ops.start_pipeline(cluster, rec)

        def on_a_worker():
            run = ops.read_run(run_id)
            return ops.worker_of(run) if run.state_name == "Running" else None

        victim = wait_until("the run Running on a worker", on_a_worker, timeout=240)
        assert victim in WORKERS, victim
        if moment == "download":
            wait_until(
                "a download in flight",
                lambda: control.stats(rec.port, host=rec.host)["active_downloads"] > 0,
                timeout=120,
            )
            proof = f"downloads in flight {control.stats(rec.port, host=rec.host)['active_downloads']}"
        else:
            line = wait_until(
                "an insert done, its reply held", lambda: held.exists() and held.read_text(), 240
            )
            first = line.splitlines()[0].split()
            assert first[0] == cluster.address(victim), (first, victim)
            stages = ops.task_states(run_id)
            assert "Running" in stages.get("persist", []), stages
            proof = f"insert of {first[1]} rows held; tasks {stages}"
        killed = cluster.kill_host(victim)
        killed_at = time.monotonic()
    finally:
        control.reset_faults(rec.port, host=rec.host)
        cluster.hold_file.unlink(missing_ok=True)
    survivor = next(role for role in WORKERS if role != victim)
    print(f"\n{moment}: killed {victim} ({len(killed)} processes) with {proof}")

    # Right after the kill: nothing reported the run, and what it held is still held.
    assert ops.read_run(run_id).state_name == "Running"
    if moment == "download":
        assert _slots(rec.name) == 1, "the dead run's download held no slot"
    else:
        # The held insert was executed: its rows are in ClickHouse without the task knowing.
        assert wait_until("the held insert's rows", lambda: ops.segment_rows(rec.name), timeout=30)

    crashed = wait_until(
        "the run marked Crashed",
        lambda: [s for s in ops.states(run_id) if s.is_crashed()],
        timeout=ZOMBIE_WINDOW_S + 120,
    )
    crashed_at = time.monotonic()
    assert crashed[0].message == ZOMBIE_MESSAGE, crashed[0].message
    run = ops.wait_final(run_id, timeout=300, min_run_count=2)
    completed_at = time.monotonic()
    assert run.state.is_completed(), (run.state.name, run.state.message)
    history = [s.name for s in ops.states(run_id)]
    assert history.count("Crashed") == 1 and history[history.index("Crashed") + 1] == "Scheduled", history
    assert run.run_count == 2, history

    assert ops.worker_of(run) == survivor, run.labels
    assert set(ops.exports_of(cluster, survivor, rec.name)) == names
    assert _slots(rec.name) == 0
    segment_count, detection_count = ops.assert_exactly_once(rec.name, names)
    print(
        f"{moment}: kill -> Crashed {crashed_at - killed_at:.1f} s, Crashed -> Completed "
        f"{completed_at - crashed_at:.1f} s, kill -> Completed {completed_at - killed_at:.1f} s; "
        f"re-run on {survivor}; {segment_count} segments, {detection_count} detections, each once"
    )
    assert completed_at - killed_at <= 180, "kill -> Completed over 3 minutes"
