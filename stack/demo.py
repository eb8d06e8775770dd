"""`make demo`: the whole chain on the embedded stack, through the deployment.

Brings the stack up, starts one `recorder_pipeline` flow run per simulated recorder via
the `recorder-pipeline/recorder` deployment (the stack's worker runs them), waits, and
prints what ClickHouse now holds. The stack keeps running for the UI.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

from stack import supervisor
from stack.simulator.spec import demo_window, load_spec

TIMEOUT_S = 1800


def _cached_tasks(runs: dict, timeout_s: float = 30) -> Counter:
    """Task runs answered from the cache, by stage. Task states reach the API as events, a
    moment after the flow run ends: read until every task run of these runs has a final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(runs.values()))), limit=200
            )
            settled = all(tr.state is not None and tr.state.is_final() for tr in task_runs)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return Counter(tr.name.split(" ")[0] for tr in task_runs if tr.state and tr.state.name == "Cached")


def main() -> int:
    began = time.monotonic()
    state = supervisor.start()
    # Prefect reads its settings on import: the stack's environment must be in place first.
    os.environ.update(state.env())
    from blocks.clickhouse import ClickHouseSink, SegmentSummary
    from blocks.loading import load_block
    from core.settings import DEFAULT_SINK_BLOCK
    from core.windows import Window
    from flows.launch import start_pipeline_runs, wait_for_runs

    start, end = demo_window()
    recorders = [r.name for r in load_spec(state.data_dir / "stack" / "simulator.json").recorders]
    print(f"window {start:%Y-%m-%d %H:%M:%S} .. {end:%H:%M:%S} UTC, recorders: {', '.join(recorders)}")
    runs = start_pipeline_runs({name: "simulated" for name in recorders}, Window(start, end))
    for name, run_id in runs.items():
        print(f"  {name}: flow run {run_id} scheduled")

    def finished(name: str, state: str) -> None:
        print(f"  {name}: {state} after {time.monotonic() - began:.0f} s")

    states = wait_for_runs(runs, TIMEOUT_S, finished)
    cached = _cached_tasks(runs)

    with load_block(ClickHouseSink, DEFAULT_SINK_BLOCK).connect() as ch:
        summaries = ch.summary_between(start, end)
    print()
    print(
        f"{'recorder':10} {'state':10} {'segments':>8} {'video s':>8} {'remuxed':>8}  people and vehicles found"
    )
    for name in recorders:
        got = summaries.get(name, SegmentSummary(name, 0, 0.0, 0))
        found = "; ".join(
            f"channel {channel}: " + ", ".join(f"{n} {label}" for label, n in labels)
            for channel, labels in sorted(got.objects.items())
        )
        if got.top_labels:  # a classifier's runs
            found += " labels: " + ", ".join(f"{label} ({frames})" for label, frames in got.top_labels)
        print(
            f"{name:10} {states[name]:10} {got.segments:>8} {got.seconds:>8.0f} {got.remuxed:>8}  {found or '-'}"
        )
    skipped = sum(cached.values())
    detail = ", ".join(f"{n} {stage}" for stage, n in sorted(cached.items()))
    print(f"\nre-used from earlier runs: {skipped} tasks" + (f" ({detail})" if detail else ""))
    print(f"wall time: {time.monotonic() - began:.0f} s")
    print(
        f"Review app: {state.review_url}   (people and vehicles, their clips; password: review_password in {state.file})"
    )
    print(f"Prefect UI: {state.ui_url}   (flow runs, artifacts, logs)")
    print(f"CLI: source {state.data_dir / 'stack' / 'env.sh'}; stop everything with: make down")
    ok = all(s == "Completed" for s in states.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
