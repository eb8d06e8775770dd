"""Starting pipeline runs: the one way dispatch, backfill, resume, the demo and the benches do it.

A run goes through the `recorder-pipeline/recorder` deployment, so it lands on the work pool
and any machine's worker picks it up; the per-recorder limits hold across all of them. Every
run carries its window's name, the `recorder:` and `site:` tags (the UI's filters) and an
idempotency key made of its recorder and window: starting the same window twice (a retried
dispatch, a re-run by hand) never makes a second run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from core.windows import Window

PIPELINE_FLOW = "recorder-pipeline"
PIPELINE_DEPLOYMENT = f"{PIPELINE_FLOW}/recorder"
POLL_SECONDS = 2.0


def run_tags(recorder: str, site: str) -> list[str]:
    """The tags of a recorder's pipeline runs, however they are started."""
    return [f"recorder:{recorder}", f"site:{site or 'none'}"]


def tag_this_run(recorder: str, site: str) -> None:
    """Give the flow run in progress its recorder's tags: runs started from the UI, the CLI or a
    schedule carry only their deployment's tags, and the UI's filter by recorder would miss them."""
    from prefect.runtime import flow_run

    wanted = run_tags(recorder, site)
    if flow_run.id is None or set(wanted) <= set(flow_run.tags):
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=sorted({*flow_run.tags, *wanted}))


@dataclass(frozen=True)
class Backfill:
    """A run started by a backfill: its own queue, a tag, and a key of the backfill run, so a retry
    of that backfill makes no second run while a later backfill may try the hour again."""

    by_run: str
    queue: str


def launch_pipeline_run(
    recorder: str,
    site: str,
    window: Window,
    *,
    channels: list[int] | None = None,
    options: dict[str, Any] | None = None,
    backfill: Backfill | None = None,
    deployment: str = PIPELINE_DEPLOYMENT,
) -> UUID:
    """One flow run of the pipeline deployment for `recorder` over `window`; returns its id.

    `options` are further parameters of the run (e.g. `sample_fps`). A recorder that already has
    a run for this window (same idempotency key) gets that run back.
    """
    parameters: dict[str, Any] = {**(options or {}), "recorder": recorder, **window.parameters()}
    if channels:
        parameters["channels"] = channels
    name, tags, key = window.run_name(recorder), run_tags(recorder, site), window.key(recorder)
    if backfill is not None:
        name, tags, key = f"{name} backfill", [*tags, "backfill"], f"backfill/{backfill.by_run}/{key}"
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: the flow run
        deployment,
        parameters=parameters,
        timeout=0,
        flow_run_name=name,
        tags=tags,
        work_queue_name=backfill.queue if backfill else None,
        idempotency_key=key,
    )
    return run.id


def start_pipeline_runs(
    recorders: dict[str, str],
    window: Window,
    deployment: str = PIPELINE_DEPLOYMENT,
    options: dict[str, Any] | None = None,
) -> dict[str, UUID]:
    """One pipeline run per recorder ({name: site}) over `window`; returns {name: run id}."""
    return {
        name: launch_pipeline_run(name, site, window, options=options, deployment=deployment)
        for name, site in recorders.items()
    }


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
