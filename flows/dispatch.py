"""`dispatch`: one `recorder_pipeline` flow run per enabled recorder, through the deployment.

Going through the deployment puts each run on the work pool, so workers on any
machine pick them up; the per-recorder limits hold across all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows.pipeline import previous_hour
from flows.recorders import registered_recorders

PIPELINE_DEPLOYMENT = "recorder-pipeline/recorder"
POLL_SECONDS = 2.0


def start_pipeline_runs(
    recorders: dict[str, str], start: datetime, end: datetime, deployment: str = PIPELINE_DEPLOYMENT
) -> dict[str, UUID]:
    """One flow run of the pipeline deployment per recorder ({name: site}); returns their ids."""
    runs = {}
    for name, site in recorders.items():
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: the flow run
            deployment,
            parameters={"recorder": name, "start": start.isoformat(), "end": end.isoformat()},
            timeout=0,
            flow_run_name=f"{name} {start:%Y-%m-%d %H:%M}",
            tags=[f"recorder:{name}", f"site:{site or 'none'}"],
        )
        runs[name] = run.id
    return runs


def wait_for_runs(
    runs: dict[str, UUID], timeout_s: float, on_final: Callable[[str, str], None] = lambda name, state: None
) -> dict[str, str]:
    """Poll until every run is final (or the time is up); returns {name: state name}."""
    final: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while len(final) < len(runs) and time.monotonic() < deadline:
            for name, run_id in runs.items():
                state = None if name in final else client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    final[name] = state.name or state.type.value
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
    """Start the pipeline for every enabled recorder (or the ones named) for [start, end)."""
    logger = get_run_logger()
    if start is None or end is None:
        start, end = previous_hour()
    known = registered_recorders()
    unknown = sorted(set(recorders or []) - set(known))
    if unknown:
        raise ValueError(f"no recorder block named {', '.join(unknown)}")
    chosen = sorted(recorders or [name for name, block in known.items() if block.enabled])
    runs = start_pipeline_runs({name: known[name].site for name in chosen}, start, end, deployment)
    for name, run_id in runs.items():
        logger.info(f"{name}: flow run {run_id} scheduled")
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
