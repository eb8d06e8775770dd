"""`report`: one self-contained HTML page for a window of footage.

    python -m flows.report --start 2026-11-01T02:00:00Z --end 2026-11-01T03:00:00Z [--out FILE]

Per recorder and channel: the transcoded MP4s as HTML5 videos (relative links, so the page
plays when opened from disk next to the data folder), a timeline of the top-1 labels drawn
as inline SVG, the most frequent labels, and what failed: segments without an output file
and failed `recorder-pipeline` runs for the window. No script and no network resource.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from core.settings import DEFAULT_SINK_BLOCK, data_dir
from core.windows import InvalidWindow, Window, cli_time, gap_rows
from flows.backfill import missing_hours
from flows.launch import PIPELINE_FLOW
from flows.recorders import chosen_recorders
from flows.run_form import WindowTime
from reports.page import Channel, ReportData, write_report


def gather(sink: ClickHouseSink, start: datetime, end: datetime) -> list[Channel]:
    """Segments that overlap [start, end) and their top-1 detections, grouped per recorder and channel."""
    with sink.connect() as ch:
        segments = ch.segments_overlapping(start, end)
        frames = ch.top1_frames_between(start, end)
    channels: dict[tuple[str, int], Channel] = {}
    for row in segments:
        entry = channels.setdefault((row.recorder, row.channel), Channel(row.recorder, row.channel))
        entry.segments.append(asdict(row))
    for recorder, channel, frame_time, label, score in frames:
        entry = channels.setdefault((recorder, channel), Channel(recorder, channel))
        entry.frames.append((frame_time, label, float(score)))
    return [channels[key] for key in sorted(channels)]


def failed_pipeline_runs(start: datetime, end: datetime, limit: int = 200) -> list[dict]:
    """Failed or crashed `recorder-pipeline` runs whose window overlaps [start, end)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[PIPELINE_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                )
            ),
            limit=limit,
        )
    found = []
    for run in runs:
        params = run.parameters or {}
        try:
            window = Window.of_run(
                params.get("start"), params.get("end"), run.expected_start_time or run.start_time,
                bool(params.get("long_window")),
            )  # fmt: skip
        except InvalidWindow:
            continue  # a refused window is no window's failure
        if window.overlaps(Window(start, end)):
            found.append({
                "name": run.name, "id": str(run.id), "recorder": str(params.get("recorder", "")),
                "state": run.state.name if run.state else "", "message": (run.state.message or "") if run.state else "",
                "when": run.start_time or run.expected_start_time,
            })  # fmt: skip
    return found


def gaps_between(sink: ClickHouseSink, window: Window) -> list[dict]:
    """The gap view of the window's settled hours: the recorder-hours a backfill would run."""
    channels = {name: block.channels for name, block in chosen_recorders(None).items()}
    return gap_rows(missing_hours(sink, window, channels, datetime.now(UTC)))


def default_path(start: datetime, end: datetime) -> Path:
    return data_dir() / "reports" / f"report-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}" / "index.html"


@flow(name="report")
def report(
    start: WindowTime, end: WindowTime, out: str | None = None, sink_block: str = DEFAULT_SINK_BLOCK
) -> str:
    """Write the HTML report of [start, end) (UTC); returns the page's path.

    Args:
        start: Window start, with a time zone (e.g. 2026-11-01T02:00:00Z).
        end: Window end (exclusive), with a time zone, after start.
        out: The page to write; its clips go into a `clips` folder beside it. Default:
            <data>/reports/report-<start>-<end>/index.html.
        sink_block: Name of the ClickHouseSink block to read from.
    """
    window = Window.of_run(start, end, None, long_window=True)
    start, end = window.start, window.end
    logger = get_run_logger()
    sink = load_block(ClickHouseSink, sink_block)
    channels = gather(sink, start, end)
    note = ""
    gaps: list[dict] = []
    try:
        runs = failed_pipeline_runs(start, end)
        gaps = gaps_between(sink, window)
    except Exception as exc:  # the report is still useful without the run history
        runs, note = [], f"Prefect API not reachable, failed runs and gaps not listed: {type(exc).__name__}"
        logger.warning(note)
    path = write_report(
        ReportData(start, end, channels, runs, note, gaps), Path(out) if out else default_path(start, end)
    )
    logger.info(f"report: {path} ({len(channels)} channels, {len(runs)} failed runs)")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.report", description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, type=cli_time, help="window start, ISO 8601 with zone")
    parser.add_argument("--end", required=True, type=cli_time, help="window end, ISO 8601 with zone")
    parser.add_argument(
        "--out",
        help="the page to write, its clips beside it (default: <data>/reports/report-<start>-<end>/index.html)",
    )
    parser.add_argument("--sink-block", default=DEFAULT_SINK_BLOCK, help="ClickHouseSink block name")
    args = parser.parse_args(argv)
    print(report(args.start, args.end, args.out, args.sink_block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
