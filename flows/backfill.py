"""`backfill`: run every recorder-hour in a range that the ledger does not hold as complete.

    python -m flows.backfill --start 2026-11-01T00:00:00Z --end 2026-11-02T00:00:00Z [--recorder nvr-01 ...]

The ledger (`windows` in ClickHouse) gets a row for a recorder's channel and hour when a
pipeline run persisted every segment of it. Hours missing there (workers down, a recorder
offline, failed segments, a paused recorder) are started here as pipeline runs, one per
recorder and hour with the channels that are missing, oldest first, on the recorder's
site's backfill queue, which workers serve after every live queue (`work_pools.queues`). The last hour (the one the live
schedule is doing now) and later ones are never backfilled: the live schedule does them.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from pydantic import Field

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from core.settings import DEFAULT_SINK_BLOCK
from core.windows import HOUR, Window, cli_time, gap_rows, missing_windows
from flows.launch import PIPELINE_DEPLOYMENT, Backfill, launch_pipeline_run
from flows.recorders import chosen_recorders
from flows.run_form import WindowTime
from work_pools.queues import backfill_queue

MAX_LOOKBACK_HOURS = 24 * 31


def backfill_window(start: object, end: object, lookback_hours: int, scheduled: datetime | None) -> Window:
    """The range a backfill looks at: its parameters, else the `lookback_hours` before the hour the
    live schedule is doing at its scheduled start (a range of any length may be looked at: only
    the missing hours become runs)."""
    if start is None and end is None:
        if scheduled is None:
            raise ValueError("start and end are empty and the run has no scheduled start time")
        live = Window.live(scheduled)
        return Window(live.start - lookback_hours * HOUR, live.start)
    return Window.of_run(start, end, scheduled, long_window=True)


def missing_hours(
    sink: ClickHouseSink, window: Window, channels: dict[str, list[int]], now: datetime
) -> dict[tuple[datetime, str], list[int]]:
    """{(hour, recorder): channels} of the window's settled hours the ledger does not hold: what a
    backfill runs, and what the report lists as gaps."""
    hours = window.settled_hours(now)
    if not hours or not channels:
        return {}
    with sink.connect() as ch:
        complete = ch.complete_windows(hours[0], hours[-1] + HOUR)
    return missing_windows(channels, hours, complete)


@flow(name="backfill")
def backfill(
    start: WindowTime = None,
    end: WindowTime = None,
    lookback_hours: int = Field(default=24, ge=1, le=MAX_LOOKBACK_HOURS),
    recorders: list[str] | None = None,
    sink_block: str = DEFAULT_SINK_BLOCK,
    deployment: str = PIPELINE_DEPLOYMENT,
    work_queue: str | None = None,
) -> dict[str, Any]:
    """Start a pipeline run for every recorder-hour in [start, end) that is not complete.

    Args:
        start: First hour to look at (rounded down to the hour), with a time zone. Give start and
            end together, or leave both empty for the `lookback_hours` before the hour the live
            schedule is doing.
        end: End of the range (exclusive), with a time zone, after start. The hour the live
            schedule is doing and later ones are left to it.
        lookback_hours: Hours to look back when start and end are empty (1 to 744).
        recorders: Names of the recorders to look at; empty: every enabled recorder.
        sink_block: Name of the ClickHouseSink block that holds the ledger.
        deployment: The pipeline deployment to start runs of.
        work_queue: Work queue of the runs; empty: each recorder's site's backfill queue, which
            workers serve after every live queue (`work_pools.queues`).
    """
    logger = get_run_logger()
    window = backfill_window(start, end, lookback_hours, flow_run.scheduled_start_time)
    now = datetime.now(UTC)
    hours = window.settled_hours(now)
    chosen = chosen_recorders(recorders)
    if not hours or not chosen:
        logger.info("nothing to look at: no past hour in the range, or no recorder")
        return {"missing": 0, "runs": {}}
    every_channel = {name: b.channels for name, b in chosen.items()}
    missing = missing_hours(load_block(ClickHouseSink, sink_block), window, every_channel, now)
    create_table_artifact(
        gap_rows(missing) or [{"recorder": "-", "hours missing": 0, "first": "", "last": ""}],
        key="backfill-gaps",
        description=f"recorder-hours not complete in {Window(hours[0], hours[-1] + HOUR).describe()}",
    )
    runs: dict[str, UUID] = {}
    for (hour, recorder), channels in missing.items():  # oldest first
        site = chosen[recorder].site
        runs[f"{recorder} {hour.isoformat()}"] = launch_pipeline_run(
            recorder, site, Window(hour, hour + HOUR), channels=channels, deployment=deployment,
            backfill=Backfill(str(flow_run.id), work_queue or backfill_queue(site)),
        )  # fmt: skip
    logger.info(f"{len(missing)} recorder-hours not complete; {len(runs)} runs started")
    return {"missing": len(missing), "runs": {k: str(v) for k, v in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, type=cli_time, help="first hour, ISO 8601 with zone")
    parser.add_argument("--end", required=True, type=cli_time, help="end of the range, ISO 8601 with zone")
    parser.add_argument(
        "--recorder", action="append", dest="recorders", help="a recorder (repeat); default: all"
    )
    parser.add_argument("--sink-block", default=DEFAULT_SINK_BLOCK, help="ClickHouseSink block name")
    args = parser.parse_args(argv)
    result = backfill(args.start, args.end, recorders=args.recorders, sink_block=args.sink_block)
    print(f"{result['missing']} recorder-hours not complete; runs started:")
    for name, run_id in result["runs"].items():
        print(f"  {name}: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
