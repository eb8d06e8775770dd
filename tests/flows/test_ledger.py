"""Recorder-hours as partitions: scheduled runs that start late each do their own hour, the ledger
records every complete hour once, and backfill starts exactly the hours that are missing."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from stack.simulator import control
from tests.own_recorder import one_channel_spec, register
from tests.support import CLASSIFIER, final_runs, pipeline_runs_of, sink

pytestmark = pytest.mark.stack

DAY = datetime(2026, 11, 4, tzinfo=UTC)
# Four 4 s segments across the 03:00 -> 04:00 boundary: two in hour 03, two in hour 04.
RECORDING_START = DAY.replace(hour=3, minute=59, second=52)
RECORDING_END = DAY.replace(hour=4, minute=0, second=8)


def _ledger(recorder: str) -> list[tuple[datetime, int]]:
    with sink() as ch:
        rows = ch.query(
            "SELECT hour, segments FROM {db}.windows WHERE recorder = {r:String} ORDER BY hour",
            {"r": recorder},
        )
    return [(hour.replace(tzinfo=UTC), n) for hour, n in rows]


def _counts(recorder: str) -> tuple[int, int]:
    with sink() as ch:
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
                    parameters={"recorder": "ledger-01", "model_block": CLASSIFIER},
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


GAPS_RECORDER = "gaps-01"


def _report_gaps(page: str) -> list[dict[str, str]]:
    """The rows of the report's Gaps table."""
    section = page.split('<section class="gaps-section">', 1)[1].split("</section>", 1)[0]
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", section)]
    keys = ("recorder", "hours missing", "first", "last")
    return [dict(zip(keys, [html.unescape(c) for c in row], strict=True)) for row in cells if row]


def _artifact_rows(flow_run_id, key: str) -> list[dict[str, str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    data = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    return [{k: str(v) for k, v in row.items()} for row in data]


def test_hours_with_a_failed_segment_stay_out_of_the_ledger_are_listed_alike_and_backfilled_oldest_first(
    stack, tmp_path
):
    """A run whose downloads are refused leaves its hours with segments out of the ledger; the report's
    Gaps section and the backfill's `backfill-gaps` artifact name the same hours; backfill runs them,
    oldest first, and the ledger then holds them, every segment once."""
    from flows.backfill import backfill
    from flows.pipeline import recorder_pipeline
    from flows.report import report

    spec = one_channel_spec(GAPS_RECORDER, RECORDING_START, RECORDING_END, 4)
    register(spec)
    (device,) = spec["recorders"]
    window = (DAY.replace(hour=2), DAY.replace(hour=5))
    hours = [DAY.replace(hour=h) for h in (2, 3, 4)]
    with control.running(spec, tmp_path):
        control.set_faults(device["port"], low_privilege="download")
        try:
            refused = recorder_pipeline(GAPS_RECORDER, *window, return_state=True)
        finally:
            control.reset_faults(device["port"])
        assert refused.is_failed()
        assert f"{GAPS_RECORDER}: 4 of 4 segments failed" in refused.message, refused.message
        # 02:00 has no recording, so it is complete; 03:00 and 04:00 each lost their segments.
        assert _ledger(GAPS_RECORDER) == [(hours[0], 0)]
        assert _counts(GAPS_RECORDER) == (0, 0)

        page = Path(report(*window, out=str(tmp_path / "report.html"))).read_text()
        in_report = [g for g in _report_gaps(page) if g["recorder"] == GAPS_RECORDER]
        expected = {"recorder": GAPS_RECORDER, "hours missing": "2", "first": hours[1].isoformat(),
                    "last": hours[2].isoformat()}  # fmt: skip
        assert in_report == [expected], _report_gaps(page)

        since = datetime.now(UTC)
        state = backfill(*window, recorders=[GAPS_RECORDER], return_state=True)
        assert state.is_completed(), state.message
        assert _artifact_rows(state.state_details.flow_run_id, "backfill-gaps") == in_report

        runs = pipeline_runs_of(GAPS_RECORDER, since)
        assert [datetime.fromisoformat(str(r.parameters["start"])) for r in runs] == hours[1:], runs
        done = final_runs([r.id for r in runs], timeout=600)
        assert [r.state.name for r in done] == ["Completed", "Completed"], [(r.name, r.state) for r in done]
    assert _ledger(GAPS_RECORDER) == [(hours[0], 0), (hours[1], 2), (hours[2], 2)]
    # Every segment once; backfill's runs look with the default model, the detector (no labels rows).
    assert _counts(GAPS_RECORDER) == (4, 0)
