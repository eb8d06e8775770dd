"""`recorder_pipeline`: one flow run per recorder and window.

search (per channel) -> download -> transcode -> classify -> persist, one task per
segment and stage. A segment that fails does not stop the others; the run fails at
the end, naming every segment that did not make it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from blocks.model_server import TFServingModel
from blocks.recorder import SUB_STREAM, HikvisionRecorder, Recording
from core.segment import Segment
from core.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK, exports_dir, mp4_dir
from core.windows import HOUR, check_window, hour_before, whole_hours
from flows.classify import SubStream, check_model, classify_segment
from flows.export import covering_sub_streams, download_task_for, export_path, search_recordings, segment_of
from flows.persist import persist_segment, record_windows
from flows.transcode import mp4_path_for, transcode_task_for
from video.transcode import TranscodeOptions

CACHED_STAGES = ("download", "transcode", "classify")


class PipelineFailed(RuntimeError):
    pass


@dataclass
class SegmentOutcome:
    segment: Segment
    state: str
    error: str = ""
    mode: str = ""
    source_codec: str = ""
    duration_s: float = 0.0
    top_labels: str = ""
    reused: tuple[str, ...] = ()  # stages answered from the cache of an earlier run


def _artifact_key(kind: str, recorder: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{recorder}".lower())


def _top_labels(classification, k: int = 3) -> str:
    counts: dict[str, int] = {}
    for d in classification.detections:
        if d.rank == 1:
            counts[d.label] = counts.get(d.label, 0) + 1
    best = sorted(counts.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{label} ({n})" for label, n in best)


def _mp4_of(rec: Recording) -> Path | None:
    export = export_path(rec)
    return mp4_path_for(export, exports_dir(), mp4_dir()) if export else None


def _error_text(state) -> str:
    try:
        state.result()
    except Exception as exc:  # the state's own exception, re-raised by result()
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return state.message or state.name


# Four segments' stages at a time: downloads wait on the recorder's limit, the rest on the CPU.
_TASK_RUNNER: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=4)


def _run_name() -> str:
    """`<recorder> <window start>`: what alerts and the UI's run list say of a run."""
    params = flow_run.parameters
    start, end = params.get("start"), params.get("end")
    if start is None or end is None:
        start, _ = hour_before(flow_run.scheduled_start_time)
    elif isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return f"{params.get('recorder', '?')} {start.astimezone(UTC):%Y-%m-%d %H:%M}"


# The flow decorator's type wants TaskRunner[PrefectFuture], which the thread-pool runner's
# concurrent futures are at run time but not for mypy (the type parameter is invariant).
@flow(name="recorder-pipeline", flow_run_name=_run_name, task_runner=_TASK_RUNNER, log_prints=True)  # type: ignore[arg-type]
def recorder_pipeline(
    recorder: str,
    start: datetime | None = None,
    end: datetime | None = None,
    channels: list[int] | None = None,
    transcode: TranscodeOptions | None = None,
    sample_fps: float = 1.0,
    key_frames: bool = False,
    model_block: str = DEFAULT_MODEL_BLOCK,
    sink_block: str = DEFAULT_SINK_BLOCK,
) -> dict:
    """Export, transcode, classify and persist one recorder's recordings of [start, end) (UTC).

    Args:
        recorder: Name of the recorder (its HikvisionRecorder block, as in the inventory).
        start: Window start, with a time zone (e.g. 2026-11-01T10:00:00Z). Leave start and end
            empty for the whole hour before the run's scheduled start time (a 10:05 run does
            09:00-10:00, even when it starts late).
        end: Window end (exclusive), with a time zone; empty: see start.
        channels: Channels (cameras) to export; empty: every channel of the recorder block.
        transcode: How MP4s are made; empty: H.264 remuxed, anything else x264 veryfast CRF 23,
            audio as AAC 96 kb/s.
        sample_fps: Frames classified per second of video.
        key_frames: Screen by key frames instead: only the recorder's key frames are decoded and
            classified, each at its own time (as often as the channel's I-frame interval, e.g.
            every 2 s); several times faster than sample_fps, coarser where the interval is long.
        model_block: Name of the TFServingModel block to classify with.
        sink_block: Name of the ClickHouseSink block to store the rows in.
    """
    logger = get_run_logger()
    if start is None or end is None:
        start, end = hour_before(flow_run.scheduled_start_time)
    start, end = check_window(start, end)
    options = transcode or TranscodeOptions()
    try:
        block = load_block(HikvisionRecorder, recorder)
    except ValueError as exc:
        raise PipelineFailed(
            f"recorder {recorder!r} has no HikvisionRecorder block; sync the inventory first"
        ) from exc
    # Each block is loaded once per run and handed to the tasks as an object.
    model = load_block(TFServingModel, model_block)
    sink = load_block(ClickHouseSink, sink_block)
    chosen = channels or block.channels

    searches = [search_recordings.submit(block, ch, start, end) for ch in chosen]
    sub_searches = (
        {ch: search_recordings.submit(block, ch, start, end, SUB_STREAM) for ch in chosen}
        if block.classify_from == "sub"
        else {}
    )
    recordings = [rec for s in searches for rec in s.result()]
    subs = covering_sub_streams(recordings, _sub_recordings(recorder, sub_searches))
    segments = [segment_of(rec) for rec in recordings]
    logger.info(f"{recorder}: {len(recordings)} segments on channels {chosen} in {start} .. {end}")
    if block.classify_from == "sub" and len(subs) < len(recordings):
        logger.warning(
            f"{recorder}: {len(recordings) - len(subs)} of {len(recordings)} segments have no sub-stream "
            "recording covering them; those are classified from the main stream"
        )
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call: the id
        0.0,
        key=_artifact_key("progress", recorder),
        description=f"{recorder}: segments done of {len(recordings)}",
    )

    outcomes: list[SegmentOutcome] = []
    if recordings:
        model_version = check_model(model)
        run_id = str(flow_run.id or "")
        # Submitted stage by stage: a task waiting for its upstream holds a worker thread,
        # so segment-by-segment submission would run the segments one after another.
        downloads, sub_downloads = [], []
        for seg, rec in zip(segments, recordings, strict=True):
            downloads.append(download_task_for(rec).submit(block, seg, rec))
            # Right after its main one, so that the segment's classify can start sooner.
            sub_downloads.append(_download_sub(block, subs.get(rec)))
        # return_state=False picks the overload that admits futures in place of values.
        transcodes = [
            transcode_task_for(_mp4_of(rec)).submit(seg, d, options, return_state=False)
            for seg, rec, d in zip(segments, recordings, downloads, strict=True)
        ]
        classified = [
            classify_segment.submit(
                seg, sub or t, model, model_version, sample_fps, key_frames, return_state=False
            )
            for seg, t, sub in zip(segments, transcodes, sub_downloads, strict=True)
        ]
        chains = {}
        for seg, d, t, c, sub in zip(segments, downloads, transcodes, classified, sub_downloads, strict=True):
            persisted = persist_segment.submit(seg, t, c, sink, block.site, run_id, return_state=False)
            chains[persisted] = (seg, d, t, c, sub)
        for done, p in enumerate(as_completed(list(chains)), start=1):
            outcomes.append(_outcome(chains[p], p))
            update_progress_artifact(progress, 100.0 * done / len(recordings))
    else:
        update_progress_artifact(progress, 100.0)

    failed = [o for o in outcomes if o.state != "ok"]
    complete = complete_windows(chosen, start, end, outcomes)
    if complete:
        record_windows(recorder, complete, sink, str(flow_run.id or ""))
    _publish(recorder, start, end, outcomes)
    failures = [f"{o.segment.label}: {o.error}" for o in failed]
    summary = {
        "recorder": recorder,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "segments": len(recordings),
        "persisted": len(outcomes) - len(failed),
        "failed": failures,
        "reused": {stage: sum(stage in o.reused for o in outcomes) for stage in CACHED_STAGES},
        "complete_hours": len(complete),
    }
    if failed:
        raise PipelineFailed(
            f"{recorder}: {len(failed)} of {len(recordings)} segments failed:\n" + "\n".join(failures)
        )
    return summary


def complete_windows(
    channels: list[int], start: datetime, end: datetime, outcomes: list[SegmentOutcome]
) -> dict[tuple[int, datetime], int]:
    """{(channel, hour): segments} for each whole hour of the window in which no segment failed."""
    complete = {}
    for channel in channels:
        for hour in whole_hours(start, end):
            touching = [
                o for o in outcomes
                if o.segment.channel == channel and o.segment.start < hour + HOUR
                and (o.segment.end or o.segment.start) > hour
            ]  # fmt: skip
            if all(o.state == "ok" for o in touching):
                complete[(channel, hour)] = len(touching)
    return complete


def _sub_recordings(recorder: str, searches: dict[int, PrefectFuture[list[Recording]]]) -> list[Recording]:
    """The sub-stream recordings found; a channel whose search failed is classified from its main stream."""
    found: list[Recording] = []
    for channel, search in searches.items():
        search.wait()
        if search.state.is_completed():
            found += search.result()
        else:
            get_run_logger().warning(
                f"{recorder} channel {channel}: no sub-stream recordings ({_error_text(search.state)}); "
                "its segments are classified from the main stream"
            )
    return found


def _download_sub(block: HikvisionRecorder, sub: Recording | None) -> SubStream | None:
    """The sub-stream recording's download submitted, for the classify stage to read; None: none."""
    if sub is None:
        return None
    segment = segment_of(sub)
    download = download_task_for(sub).submit(block, segment, sub)
    # A future in place of the result: Prefect resolves it (a dataclass field) before classify runs.
    return SubStream(segment, download)  # type: ignore[arg-type]


def _outcome(chain, persisted) -> SegmentOutcome:
    segment, *stages, sub = chain
    # A sub-stream download that failed is named before the classify stage it left unrun.
    for future in (*stages[:2], *([sub.download] if sub else []), *stages[2:], persisted):
        future.wait()  # the final state is known locally only after a wait
        state = future.state
        if not state.is_completed():
            return SegmentOutcome(
                segment, "failed", _error_text(state) if state.is_failed() else f"not run ({state.name})"
            )
    transcoded, classification = stages[1].result(), stages[2].result()
    reused = tuple(name for name, f in zip(CACHED_STAGES, stages, strict=True) if f.state.name == "Cached")
    return SegmentOutcome(
        segment, "ok", mode=transcoded.mode, source_codec=transcoded.source_codec,
        duration_s=transcoded.duration_s, top_labels=_top_labels(classification), reused=reused,
    )  # fmt: skip


def _publish(recorder: str, start: datetime, end: datetime, outcomes: list[SegmentOutcome]) -> None:
    rows = [
        {
            "channel": o.segment.channel,
            "segment": o.segment.name,
            "start (UTC)": o.segment.start.isoformat(),
            "codec": o.source_codec,
            "duration s": round(o.duration_s, 1),
            "transcode": o.mode,
            "top labels": o.top_labels,
            "status": o.state if o.state == "ok" else o.error,
        }  # fmt: skip
        for o in sorted(outcomes, key=lambda o: (o.segment.channel, o.segment.start))
    ]
    create_table_artifact(
        rows, key=_artifact_key("segments", recorder), description=f"{recorder} segments {start} .. {end}"
    )
    ok = sum(o.state == "ok" for o in outcomes)
    seconds = sum(o.duration_s for o in outcomes)
    text = [f"# {recorder}: {start:%Y-%m-%d %H:%M} .. {end:%H:%M} UTC", "",
            f"- segments persisted: **{ok} of {len(outcomes)}**", f"- video: {seconds:.0f} s",
            "- re-used from earlier runs: " + ", ".join(
                f"{sum(st in o.reused for o in outcomes)} {st}" for st in CACHED_STAGES)]  # fmt: skip
    text += [f"- failed: {o.segment.label}: {o.error}" for o in outcomes if o.state != "ok"]
    create_markdown_artifact(
        "\n".join(text), key=_artifact_key("summary", recorder), description=f"{recorder} run summary"
    )
