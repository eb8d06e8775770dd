"""Windows through the deployments: the schedule's hour, never the clock; one run per recorder and
window; a window Prefect can check is refused before a run exists, one only the run can check
fails the run at once, named as no window's run."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.stack

ISO_RULE = "(?#an ISO 8601 time with a time zone"


def _runs_of(deployment_name: str) -> set:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )
    return {r.id for r in runs}


@pytest.mark.parametrize(
    ("deployment", "extra"),
    [
        ("recorder-pipeline/recorder", {"recorder": "nvr-02"}),
        ("dispatch/fleet", {"recorders": ["nvr-02"]}),
        ("backfill/hourly-gaps", {"recorders": ["nvr-02"]}),
    ],
)
def test_a_window_prefect_can_check_is_refused_before_any_run(stack, deployment, extra):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    cases = [
        ({"start": "2026-10-01T02:00:00Z"}, "'end' is a dependency of 'start'"),
        ({"end": "2026-10-01T03:00:00Z"}, "'start' is a dependency of 'end'"),
        (
            {"start": "2026-10-01T02:00:00", "end": "2026-10-01T03:00:00Z"},
            "Validation failed for field 'start'",
        ),
        ({"start": "2026-10-01T02:00:00Z", "end": "01/10/2026 03:00"}, "Validation failed for field 'end'"),
    ]
    before = _runs_of(deployment)
    with get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
        for window, words in cases:
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(target.id, parameters={**extra, **window})
            said = refused.value.response.text
            assert refused.value.response.status_code == 409, said
            assert words in said, said
            if "field" in words:
                assert ISO_RULE in said, said
    assert _runs_of(deployment) == before


def test_prefect_deployment_run_names_the_parameter_and_the_rule(stack):
    before = _runs_of("recorder-pipeline/recorder")
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    for params, words in (
        (["--param", "start=2026-10-01T02:00:00Z"], "'end' is a dependency of 'start'"),
        (
            ["--param", "start=2026-10-01T02:00:00", "--param", "end=2026-10-01T03:00:00Z"],
            "an ISO 8601 time with a",
        ),
    ):
        done = subprocess.run(
            [prefect, "deployment", "run", "recorder-pipeline/recorder", "--param", "recorder=nvr-02", *params],
            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"},
        )  # fmt: skip
        said = done.stdout + done.stderr
        assert done.returncode == 1, said
        assert "Error creating flow run" in said and words in said, said
    assert _runs_of("recorder-pipeline/recorder") == before


@pytest.mark.parametrize(
    ("window", "words"),
    [
        (
            {"start": "2026-10-02T03:00:00Z", "end": "2026-10-02T02:00:00Z"},
            "end 2026-10-02 02:00:00 UTC is not after start",
        ),
        ({"start": "2026-10-01T00:00:00Z", "end": "2026-10-09T00:00:00Z"}, "is more than 7 days after start"),
    ],
)
def test_a_window_only_the_run_can_check_fails_it_at_once_as_no_windows_run(stack, window, words):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from blocks.clickhouse import ClickHouseSink
    from core.windows import Window
    from flows.launch import wait_for_runs
    from flows.report import failed_pipeline_runs

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"recorder": "nvr-02", **window}
        )
    assert wait_for_runs({"run": run.id}, timeout_s=300) == {"run": "Failed"}
    with get_client(sync_client=True) as client:
        done = client.read_flow_run(run.id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert done.name == "nvr-02 invalid window"
    assert words in (done.state.message or ""), done.state.message
    assert tasks == []  # nothing searched, nothing written
    with ClickHouseSink.load("nvrflow").connect() as ch:
        ledger = ch.query(
            "SELECT count() FROM {db}.windows WHERE flow_run_id = {id:String}", {"id": str(run.id)}
        )
    assert ledger == [(0,)]
    # The report of the days it names lists it as no window's failure.
    days = Window(datetime(2026, 9, 30, tzinfo=UTC), datetime(2026, 10, 10, tzinfo=UTC))
    assert [r for r in failed_pipeline_runs(days.start, days.end) if r["id"] == str(run.id)] == []


def test_a_three_day_window_is_described_with_both_dates(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.launch import wait_for_runs

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"recorder": "nvr-02", "channels": [2], "start": "2026-10-01T00:00:00Z", "end": "2026-10-04T00:00:00Z"},
        )  # fmt: skip
    assert wait_for_runs({"run": run.id}, timeout_s=300) == {"run": "Completed"}
    with get_client(sync_client=True) as client:
        (summary,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["summary-nvr-02"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
    text = summary.data
    assert text.startswith("# nvr-02: 2026-10-01 00:00 .. 2026-10-04 00:00 UTC"), text


@pytest.mark.faults(
    fault="scheduled run started a month late",
    state="Completed",
    message="none: the run is named for its own window",
    data="the window before its scheduled start (02:00-03:00), not the hour before now",
)
def test_a_late_scheduled_run_does_its_own_window(stack):
    """Scheduled for 03:05 a month ago and started only now: it still exports 02:00-03:00, and
    carries its recorder's tags though no dispatch gave them."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from flows.launch import wait_for_runs

    scheduled = datetime(2026, 11, 1, 3, 5, tzinfo=UTC)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"recorder": "nvr-02", "channels": [2]},
            state=Scheduled(scheduled_time=scheduled),
        )
    assert "recorder:nvr-02" not in run.tags
    assert wait_for_runs({"nvr-02": run.id}, timeout_s=600) == {"nvr-02": "Completed"}
    with get_client(sync_client=True) as client:
        done = client.read_flow_run(run.id)
    summary = done.state.result()
    assert (summary["start"], summary["end"]) == ("2026-11-01T02:00:00+00:00", "2026-11-01T03:00:00+00:00")
    assert summary["segments"] > 0 and summary["failed"] == []
    assert done.name == "nvr-02 2026-11-01 02:00"
    assert {"recorder:nvr-02", "site:simulated"} <= set(done.tags), done.tags


def test_dispatching_a_window_twice_makes_one_run_per_recorder(stack):
    from prefect.client.orchestration import get_client

    from core.windows import Window
    from flows.launch import start_pipeline_runs, wait_for_runs

    window = Window(datetime(2026, 10, 1, 5, tzinfo=UTC), datetime(2026, 10, 1, 6, tzinfo=UTC))
    first = start_pipeline_runs({"nvr-01": "simulated", "nvr-02": "simulated"}, window)
    again = start_pipeline_runs({"nvr-01": "simulated", "nvr-02": "simulated"}, window)
    assert first == again
    assert wait_for_runs(first, timeout_s=600) == {"nvr-01": "Completed", "nvr-02": "Completed"}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    named = [r for r in runs if r.name in ("nvr-01 2026-10-01 05:00", "nvr-02 2026-10-01 05:00")]
    assert len(named) == 2
