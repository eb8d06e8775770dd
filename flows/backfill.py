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
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from core.settings import DEFAULT_SINK_BLOCK
from core.windows import HOUR, check_window, gap_rows, hour_before, hours_touching, missing_windows
from flows.dispatch import PIPELINE_DEPLOYMENT, window_key
from flows.recorders import registered_recorders
from work_pools.queues import backfill_queue


@flow(name="backfill")
def backfill(
    start: datetime | None = None,
    end: datetime | None = None,
    lookback_hours: int = 24,
    recorders: list[str] | None = None,
    sink_block: str = DEFAULT_SINK_BLOCK,
    deployment: str = PIPELINE_DEPLOYMENT,
    work_queue: str | None = None,
) -> dict[str, Any]:
    """Start a pipeline run for every recorder-hour in [start, end) that is not complete.

    Args:
        start: First hour to look at (rounded down to the hour), with a time zone. Leave start
            and end empty for the `lookback_hours` before the hour the live schedule is doing.
        end: End of the range (exclusive), with a time zone. The last hour before now and later
            ones are left to the live schedule.
        lookback_hours: Hours to look back when start and end are empty.
        recorders: Names of the recorders to look at; empty: every enabled recorder.
        sink_block: Name of the ClickHouseSink block that holds the ledger.
        deployment: The pipeline deployment to start runs of.
        work_queue: Work queue of the runs; empty: each recorder's site's backfill queue, which
            workers serve after every live queue (`work_pools.queues`).
    """
    logger = get_run_logger()
    live_start, _ = hour_before(datetime.now(UTC))  # the hour the live schedule is doing now
    if start is None or end is None:
        end = hour_before(flow_run.scheduled_start_time)[0]
        start = end - lookback_hours * HOUR
    start, end = check_window(start, end)
    hours = [h for h in hours_touching(start, end) if h < live_start]
    known = registered_recorders()
    unknown = sorted(set(recorders or []) - set(known))
    if unknown:
        raise ValueError(f"no recorder block named {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    names = recorders or [name for name, block in known.items() if block.enabled]
    chosen = {name: known[name].channels for name in sorted(names)}
    if not hours or not chosen:
        logger.info("nothing to look at: no past hour in the range, or no recorder")
        return {"missing": 0, "runs": {}}
    with load_block(ClickHouseSink, sink_block).connect() as ch:
        complete = ch.complete_windows(hours[0], hours[-1] + HOUR)
    missing = missing_windows(chosen, hours, complete)
    gaps = gap_rows(missing)
    create_table_artifact(
        gaps or [{"recorder": "-", "hours missing": 0, "first": "", "last": ""}],
        key="backfill-gaps",
        description=f"recorder-hours not complete in {hours[0]:%Y-%m-%d %H:%M} .. {hours[-1] + HOUR:%Y-%m-%d %H:%M} UTC",
    )
    runs: dict[str, UUID] = {}
    for (hour, recorder), channels in missing.items():  # oldest first
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: the flow run
            deployment,
            parameters={
                "recorder": recorder,
                "start": hour.isoformat(),
                "end": (hour + HOUR).isoformat(),
                "channels": channels,
            },  # fmt: skip
            timeout=0,
            flow_run_name=f"{recorder} {hour:%Y-%m-%d %H:%M} backfill",
            tags=[f"recorder:{recorder}", "backfill"],
            work_queue_name=work_queue or backfill_queue(known[recorder].site),
            # A retry of this backfill makes no second run; a later backfill may try again.
            idempotency_key=f"backfill/{flow_run.id}/{window_key(recorder, hour, hour + HOUR)}",
        )
        runs[f"{recorder} {hour.isoformat()}"] = run.id
    logger.info(f"{len(missing)} recorder-hours not complete; {len(runs)} runs started")
    return {"missing": len(missing), "runs": {k: str(v) for k, v in runs.items()}}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, type=_parse_time, help="first hour, ISO 8601 with zone")
    parser.add_argument("--end", required=True, type=_parse_time, help="end of the range, ISO 8601 with zone")
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
