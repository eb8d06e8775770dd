"""What went wrong in a range: failed pipeline runs (from Prefect's API) and the hours not done.

Both come from the report's functions (`flows.report`), which ask Prefect's API: the app shows
what it could get and says so when Prefect is not reachable, as the report does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from blocks.clickhouse import ClickHouseSink


@dataclass
class RunTrouble:
    failed: list[dict] = field(default_factory=list)  # name, id, recorder, state, message, when, url
    gaps: list[dict] = field(default_factory=list)  # recorder, hours missing, first, last
    note: str = ""


def run_trouble(
    sink: ClickHouseSink, start: datetime, end: datetime, ui_url: str | None, recorder: str | None = None
) -> RunTrouble:
    """Failed `recorder-pipeline` runs and gaps overlapping [start, end), of one recorder or all."""
    from core.windows import Window
    from flows.report import failed_pipeline_runs, gaps_between

    trouble = RunTrouble()
    try:
        trouble.failed = [r for r in failed_pipeline_runs(start, end) if recorder in (None, r["recorder"])]
        trouble.gaps = [g for g in gaps_between(sink, Window(start, end)) if recorder in (None, g["recorder"])]
    except Exception as exc:  # the pages are still useful without the run history
        trouble.note = f"Prefect API not reachable, failed runs and gaps not listed: {type(exc).__name__}"
    for run in trouble.failed:
        run["url"] = f"{ui_url.rstrip('/')}/runs/flow-run/{run['id']}" if ui_url else ""
    return trouble
