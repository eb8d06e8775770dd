"""Windows from the schedule, never the clock; one run per recorder and window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.windows import check_window, hour_before

pytestmark = pytest.mark.stack


def test_a_run_does_the_hour_before_its_scheduled_start():
    assert hour_before(datetime(2026, 11, 1, 10, 5, tzinfo=UTC)) == (
        datetime(2026, 11, 1, 9, tzinfo=UTC),
        datetime(2026, 11, 1, 10, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="time zone"):
        check_window(datetime(2026, 11, 1, 9), datetime(2026, 11, 1, 10))
    with pytest.raises(ValueError, match="empty window"):
        check_window(datetime(2026, 11, 1, 10, tzinfo=UTC), datetime(2026, 11, 1, 9, tzinfo=UTC))


@pytest.mark.faults(
    fault="scheduled run started a month late",
    state="Completed",
    message="none: the run is named for its own window",
    data="the window before its scheduled start (02:00-03:00), not the hour before now",
)
def test_a_late_scheduled_run_does_its_own_window(stack):
    """Scheduled for 03:05 a month ago and started only now: it still exports 02:00-03:00."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from flows.dispatch import wait_for_runs

    scheduled = datetime(2026, 11, 1, 3, 5, tzinfo=UTC)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"recorder": "nvr-02", "channels": [2]},
            state=Scheduled(scheduled_time=scheduled),
        )
    assert wait_for_runs({"nvr-02": run.id}, timeout_s=600) == {"nvr-02": "Completed"}
    with get_client(sync_client=True) as client:
        summary = client.read_flow_run(run.id).state.result()
    assert (summary["start"], summary["end"]) == ("2026-11-01T02:00:00+00:00", "2026-11-01T03:00:00+00:00")
    assert summary["segments"] > 0 and summary["failed"] == []


def test_dispatching_a_window_twice_makes_one_run_per_recorder(stack):
    from prefect.client.orchestration import get_client

    from flows.dispatch import start_pipeline_runs, wait_for_runs

    start, end = datetime(2026, 10, 1, 5, tzinfo=UTC), datetime(2026, 10, 1, 6, tzinfo=UTC)
    first = start_pipeline_runs({"nvr-01": "simulated", "nvr-02": "simulated"}, start, end)
    again = start_pipeline_runs({"nvr-01": "simulated", "nvr-02": "simulated"}, start, end)
    assert first == again
    assert wait_for_runs(first, timeout_s=600) == {"nvr-01": "Completed", "nvr-02": "Completed"}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    named = [r for r in runs if r.name in ("nvr-01 2026-10-01 05:00", "nvr-02 2026-10-01 05:00")]
    assert len(named) == 2
