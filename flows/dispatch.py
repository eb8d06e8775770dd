"""`dispatch`: one `recorder_pipeline` flow run per enabled recorder, through the deployment.

Going through the deployment puts each run on the work pool, so workers on any
machine pick them up; the per-recorder limits hold across all of them. Each run carries
an idempotency key made of its recorder and window, so dispatching the same window twice
(a retried dispatch, a re-run by hand) never makes a second run.
"""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from flows.launch import PIPELINE_DEPLOYMENT, start_pipeline_runs, wait_for_runs
from flows.recorders import chosen_recorders
from flows.run_form import WindowTime, window_of_run


@flow(name="dispatch")
def dispatch(
    start: WindowTime = None,
    end: WindowTime = None,
    recorders: list[str] | None = None,
    deployment: str = PIPELINE_DEPLOYMENT,
    wait: bool = True,
    timeout_s: float = 6 * 3600,
    long_window: bool = False,
) -> dict[str, str]:
    """Start the pipeline for every enabled recorder (or the ones named) for [start, end).

    Args:
        start: Window start, with a time zone. Give start and end together, or leave both empty
            for the whole hour before this run's scheduled start time (the hourly schedule's run
            at 10:05 does 09:00-10:00, even when it starts late).
        end: Window end (exclusive), with a time zone, after start; at most 7 days after it.
        recorders: Names of the recorders to run; empty: every enabled recorder.
        deployment: The pipeline deployment to start runs of.
        wait: Wait for the runs to finish and fail if any did not complete.
        timeout_s: How long to wait, seconds.
        long_window: Allow a window longer than 7 days (each recorder's run then holds all of it).
    """
    window = window_of_run(start, end, long_window)
    logger = get_run_logger()
    chosen = chosen_recorders(recorders)
    options = {"long_window": True} if long_window else None
    runs = start_pipeline_runs({n: b.site for n, b in chosen.items()}, window, deployment, options)
    for name, run_id in runs.items():
        logger.info(f"{name}: flow run {run_id} for {window.describe()}")
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
