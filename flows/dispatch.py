"""`dispatch`: one `recorder_pipeline` flow run per enabled recorder, through the deployment.

Going through the deployment puts each run on the work pool, so workers on any
machine pick them up; the per-recorder limits hold across all of them. Each run carries
an idempotency key made of its recorder and window, so dispatching the same window twice
(a retried dispatch, a re-run by hand) never makes a second run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from core.windows import check_window, hour_before
from flows.recorders import registered_recorders

PIPELINE_DEPLOYMENT = "recorder-pipeline/recorder"
POLL_SECONDS = 2.0


def window_key(recorder: str, start: datetime, end: datetime) -> str:
    """The idempotency key of a recorder's run for a window: one run per recorder and window."""
    return f"{recorder}/{start.isoformat()}/{end.isoformat()}"


def start_pipeline_runs(
    recorders: dict[str, str],
    start: datetime,
    end: datetime,
    deployment: str = PIPELINE_DEPLOYMENT,
    options: dict[str, object] | None = None,
) -> dict[str, UUID]:
    """One flow run of the pipeline deployment per recorder ({name: site}); returns their ids.

    `options` are further parameters of every run (e.g. `sample_fps`). A recorder that already
    has a run for this window (same idempotency key) gets that run back.
    """
    runs = {}
    for name, site in recorders.items():
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: the flow run
            deployment,
            parameters={
                **(options or {}),
                "recorder": name,
                "start": start.isoformat(),
                "end": end.isoformat(),
            },
            timeout=0,
            flow_run_name=f"{name} {start:%Y-%m-%d %H:%M}",
            tags=[f"recorder:{name}", f"site:{site or 'none'}"],
            idempotency_key=window_key(name, start, end),
        )
        runs[name] = run.id
    return runs


def wait_for_runs(
    runs: dict[str, UUID], timeout_s: float, on_final: Callable[[str, str], None] = lambda name, state: None
) -> dict[str, str]:
    """Poll, one API call for all the runs each time, until every run is final (or the time is up).

    Returns {name: state name}.
    """
    names = {run_id: name for name, run_id in runs.items()}
    final: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while len(final) < len(runs) and time.monotonic() < deadline:
            waiting = [run_id for run_id, name in names.items() if name not in final]
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=waiting)), limit=len(waiting)
            ):
                if run.state is not None and run.state.is_final():
                    name = names[run.id]
                    final[name] = run.state.name or run.state.type.value
                    on_final(name, final[name])
            if len(final) < len(runs):
                time.sleep(POLL_SECONDS)
    return {name: final.get(name, "still running") for name in runs}


@flow(name="dispatch")
def dispatch(
    start: datetime | None = None,
    end: datetime | None = None,
    recorders: list[str] | None = None,
    deployment: str = PIPELINE_DEPLOYMENT,
    wait: bool = True,
    timeout_s: float = 6 * 3600,
) -> dict[str, str]:
    """Start the pipeline for every enabled recorder (or the ones named) for [start, end).

    Args:
        start: Window start, with a time zone. Leave start and end empty for the whole hour
            before this run's scheduled start time (the hourly schedule's run at 10:05 does
            09:00-10:00, even when it starts late).
        end: Window end (exclusive), with a time zone; empty: see start.
        recorders: Names of the recorders to run; empty: every enabled recorder.
        deployment: The pipeline deployment to start runs of.
        wait: Wait for the runs to finish and fail if any did not complete.
        timeout_s: How long to wait, seconds.
    """
    logger = get_run_logger()
    if start is None or end is None:
        start, end = hour_before(flow_run.scheduled_start_time)
    start, end = check_window(start, end)
    known = registered_recorders()
    unknown = sorted(set(recorders or []) - set(known))
    if unknown:
        raise ValueError(f"no recorder block named {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = sorted(recorders or [name for name, block in known.items() if block.enabled])
    runs = start_pipeline_runs({name: known[name].site for name in chosen}, start, end, deployment)
    for name, run_id in runs.items():
        logger.info(f"{name}: flow run {run_id} for {start:%Y-%m-%d %H:%M} .. {end:%H:%M} UTC")
    if not wait:
        return {name: "scheduled" for name in runs}

    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call: the id
        0.0, key="dispatch-progress", description="recorder runs finished"
    )
    done = []

    def finished(name: str, state: str) -> None:
        done.append(name)
        logger.info(f"{name}: {state}")
        update_progress_artifact(progress, 100.0 * len(done) / len(runs))

    final = wait_for_runs(runs, timeout_s, finished)
    create_table_artifact(
        [{"recorder": n, "flow run": str(runs[n]), "state": s} for n, s in sorted(final.items())],
        key="dispatch-recorders",
        description="one row per recorder",
    )
    failed = {n: s for n, s in final.items() if s != "Completed"}
    if failed:
        raise RuntimeError(
            "recorder runs not completed: " + ", ".join(f"{n} ({s})" for n, s in failed.items())
        )
    return final
