"""`recorder_pipeline`: one flow run per recorder and window.

search (per channel) -> the segment chains (`flows.chain`: download -> transcode -> detect (or classify) ->
persist, one task per segment and stage) -> the ledger -> the run's artifacts. A segment that
fails does not stop the others; the run fails at the end, naming every segment that did not
make it. A window the run must not do fails it at once (`<recorder> invalid window`), before
anything is searched or written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from blocks.model_server import TFServingModel
from blocks.recorder import SUB_STREAM, HikvisionRecorder, Recording
from core.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK, DEFAULT_VIDEO_STORE_BLOCK
from core.windows import InvalidWindow, Window, complete_hours, invalid_run_name
from flows.chain import CACHED_STAGES, Chain, RunSettings, SegmentOutcome, error_text, submit_chains
from flows.classify import check_model
from flows.detect import DetectOptions
from flows.export import Search, covering_sub_streams, search_recordings
from flows.launch import PIPELINE_FLOW, tag_this_run
from flows.persist import Destination, record_windows, store_for
from flows.run_artifacts import collect_outcomes, publish
from flows.run_form import WindowTime, window_of_run
from video.transcode import TranscodeOptions


class PipelineFailed(RuntimeError):
    pass


# Four segments' stages at a time: downloads wait on the recorder's limit, the rest on the CPU.
_TASK_RUNNER: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=4)


def _run_name() -> str:
    """`<recorder> <window start>` (alerts, reports, the UI's run list), or `<recorder> invalid window`."""
    params = flow_run.parameters
    recorder = str(params.get("recorder", "?"))
    try:
        window = window_of_run(params.get("start"), params.get("end"), bool(params.get("long_window")))
    except InvalidWindow:
        return invalid_run_name(recorder)
    return window.run_name(recorder)


# The flow decorator's type wants TaskRunner[PrefectFuture], which the thread-pool runner's
# concurrent futures are at run time but not for mypy (the type parameter is invariant).
@flow(name=PIPELINE_FLOW, flow_run_name=_run_name, task_runner=_TASK_RUNNER, log_prints=True)  # type: ignore[arg-type]
def recorder_pipeline(
    recorder: str,
    start: WindowTime = None,
    end: WindowTime = None,
    channels: list[int] | None = None,
    transcode: TranscodeOptions | None = None,
    sample_fps: float = 1.0,
    key_frames: bool = False,
    whole_frames: bool = False,
    long_window: bool = False,
    model_block: str = DEFAULT_MODEL_BLOCK,
    sink_block: str = DEFAULT_SINK_BLOCK,
    video_store_block: str = DEFAULT_VIDEO_STORE_BLOCK,
) -> dict:
    """Export, transcode, classify and persist one recorder's recordings of [start, end) (UTC).

    Args:
        recorder: Name of the recorder (its HikvisionRecorder block, as in the inventory).
        start: Window start, with a time zone (e.g. 2026-11-01T10:00:00Z). Give start and end
            together, or leave both empty for the whole hour before the run's scheduled start
            time (a 10:05 run does 09:00-10:00, even when it starts late).
        end: Window end (exclusive), with a time zone, after start; at most 7 days after it.
        channels: Channels (cameras) to export; empty: every channel of the recorder block.
        transcode: How MP4s are made; empty: H.264 remuxed, anything else x264 veryfast CRF 23,
            audio as AAC 96 kb/s.
        sample_fps: Frames looked at per second of video.
        key_frames: Screen by key frames instead: only the recorder's key frames are decoded and
            looked at, each at its own time (as often as the channel's I-frame interval, e.g.
            every 2 s); several times faster than sample_fps, coarser where the interval is long.
        whole_frames: A detector sees every sampled frame whole, instead of the squares around what
            moves (and a whole frame every few seconds); slower, and small people are missed.
        long_window: Allow a window longer than 7 days in one run (one run then holds every
            segment of it; a backfill of hours is usually the better way).
        model_block: Name of the TFServingModel block: a detector of people and vehicles (the
            default), or a classifier.
        sink_block: Name of the ClickHouseSink block to store the rows in.
        video_store_block: Name of the file system block every machine and the review app reach,
            where clips and thumbnails go.
    """
    window = window_of_run(start, end, long_window)
    try:
        block = load_block(HikvisionRecorder, recorder)
    except ValueError as exc:
        raise PipelineFailed(
            f"recorder {recorder!r} has no HikvisionRecorder block; sync the inventory first"
        ) from exc
    tag_this_run(recorder, block.site)
    # Each block is loaded once per run and handed to the tasks as an object.
    model = load_block(TFServingModel, model_block)
    sink = load_block(ClickHouseSink, sink_block)
    chosen = channels or block.channels

    recordings, subs, utc_offset = find_recordings(block, chosen, window)
    chains: list[Chain] = []
    if recordings:
        run = RunSettings(
            block, model, check_model(model), transcode or TranscodeOptions(),
            DetectOptions(sample_fps, key_frames, regions=not whole_frames),
            Destination(sink, store_for(model, video_store_block), block.site, str(flow_run.id or ""), utc_offset),
        )  # fmt: skip
        chains = submit_chains(recordings, subs, run)
    outcomes = collect_outcomes(recorder, chains)
    spans = [(o.segment.channel, o.segment.start, o.segment.end or o.segment.start, o.ok) for o in outcomes]
    complete = complete_hours(chosen, window, spans)
    if complete:
        record_windows(recorder, complete, sink, str(flow_run.id or ""))
    ran = [stage for stage in CACHED_STAGES if any(stage in chain.stages for chain in chains)]
    publish(recorder, window, outcomes, ran)
    return summarise(recorder, window, outcomes, len(complete), ran)


def find_recordings(
    block: HikvisionRecorder, channels: list[int], window: Window
) -> tuple[list[Recording], dict[Recording, Recording], timedelta]:
    """The window's recordings of each channel, the sub-stream recording covering each (if the
    recorder classifies from its sub-stream), and the recorder's UTC offset."""
    logger = get_run_logger()
    searches = [search_recordings.submit(block, ch, window.start, window.end) for ch in channels]
    sub_searches = (
        {ch: search_recordings.submit(block, ch, window.start, window.end, SUB_STREAM) for ch in channels}
        if block.classify_from == "sub"
        else {}
    )
    found = [s.result() for s in searches]
    recordings = [rec for f in found for rec in f.recordings]
    subs = covering_sub_streams(recordings, _sub_recordings(block.name, sub_searches))
    logger.info(f"{block.name}: {len(recordings)} segments on channels {channels} in {window.describe()}")
    if block.classify_from == "sub" and len(subs) < len(recordings):
        logger.warning(
            f"{block.name}: {len(recordings) - len(subs)} of {len(recordings)} segments have no sub-stream "
            "recording covering them; those are looked at in the main stream"
        )
    return recordings, subs, found[0].utc_offset if found else timedelta(0)


def _sub_recordings(recorder: str, searches: dict[int, PrefectFuture[Search]]) -> list[Recording]:
    """The sub-stream recordings found; a channel whose search failed is classified from its main stream."""
    found: list[Recording] = []
    for channel, search in searches.items():
        search.wait()
        if search.state.is_completed():
            found += search.result().recordings
        else:
            get_run_logger().warning(
                f"{recorder} channel {channel}: no sub-stream recordings ({error_text(search.state)}); "
                "its segments are classified from the main stream"
            )
    return found


def summarise(
    recorder: str, window: Window, outcomes: list[SegmentOutcome], complete_hours: int, ran: list[str]
) -> dict:
    """The run's result; PipelineFailed naming every segment that failed. `ran`: the cached stages
    this run had (a classifier's or a detector's)."""
    failures = [f"{o.segment.label}: {o.error}" for o in outcomes if not o.ok]
    if failures:
        raise PipelineFailed(
            f"{recorder}: {len(failures)} of {len(outcomes)} segments failed:\n" + "\n".join(failures)
        )
    return {
        "recorder": recorder,
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "segments": len(outcomes),
        "persisted": len(outcomes),
        "failed": [],
        "reused": {stage: sum(stage in o.reused for o in outcomes) for stage in ran},
        "complete_hours": complete_hours,
    }
