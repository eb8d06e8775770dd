"""`ingest_video`: one video file from outside the recorders (an upload, a dropped clip).

transcode -> detect (or classify) -> persist with the pipeline's own stage tasks, the rows in
the same tables: recorder = the source name, channel 0, segment =
`<first 16 hex of the content's sha256>-<file stem>` (`core.segment.Segment.of_file`).
The file moves through `ingest/processing`, then `done` or `failed` (`inbox/folders.py`).

Ingesting the same content again adds no rows: the segment's identity, and so every
cache key and insert token, comes from the source and the content hash, not from the
file's name or time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from blocks.model_server import TFServingModel
from core.segment import Segment, check_source
from core.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK, DEFAULT_VIDEO_STORE_BLOCK
from flows.classify import check_model, classify_segment
from flows.detect import DetectOptions, detect_segment
from flows.persist import Analysis, Destination, persist_segment, store_for
from flows.transcode import transcode_task_for
from inbox.folders import claim, describe_file, failure_reason, ingest_dir, move_into, set_aside
from video.transcode import TranscodeOptions


@flow(name="ingest-video", log_prints=True)
def ingest_video(
    path: str,
    source: str = "upload",
    start: datetime | None = None,
    transcode: TranscodeOptions | None = None,
    sample_fps: float = 1.0,
    key_frames: bool = False,
    model_block: str = DEFAULT_MODEL_BLOCK,
    sink_block: str = DEFAULT_SINK_BLOCK,
    video_store_block: str = DEFAULT_VIDEO_STORE_BLOCK,
) -> dict[str, Any]:
    """Transcode, classify and persist one video file; it ends in ingest/done/ or ingest/failed/.

    Args:
        path: Absolute path of the file, as the worker sees it.
        source: Name the rows carry as `recorder` (letters, digits, `.`, `_`, `-`).
        start: When the recording began (UTC); empty: the file's modification time.
        transcode: How the MP4 is made; empty: remux H.264, x264 veryfast for the rest, AAC audio.
        sample_fps: Frames looked at per second of video.
        key_frames: Look at the key frames only, each at its own time (instead of sample_fps).
        model_block: Name of the TFServingModel block: a detector (the default) or a classifier.
        sink_block: Name of the ClickHouseSink block to store the rows in.
        video_store_block: Name of the file system block where clips and thumbnails go.
    """
    logger = get_run_logger()
    original = Path(path)
    check_source(source)
    working = claim(original)
    run_id = str(flow_run.id or "")
    segment: Segment | None = None
    try:
        segment = describe_file(working, source, start)
        model = load_block(TFServingModel, model_block)
        sink = load_block(ClickHouseSink, sink_block)
        version = check_model(model)
        options = transcode or TranscodeOptions()
        transcoded = transcode_task_for(segment)(segment, working, options)
        analysis: Analysis
        if model.kind == "detector":
            analysis = detect_segment(
                segment, transcoded, transcoded, model, version, DetectOptions(sample_fps, key_frames)
            )
        else:
            analysis = classify_segment(segment, transcoded, model, version, sample_fps, key_frames)
        to = Destination(sink, store_for(model, video_store_block), segment.source, run_id)
        persisted = persist_segment(segment, transcoded, analysis, to)
    except BaseException as exc:
        kept = set_aside(working, failure_reason(original, segment, exc, run_id))
        logger.error(f"{original.name}: {type(exc).__name__}: {exc}; kept as {kept}")
        raise
    done = move_into(working, ingest_dir("done"))
    logger.info(
        f"{original.name}: {analysis.frames} frames, {persisted.inserted} rows inserted, "
        f"{persisted.outboxed} in the outbox; output {transcoded.output}; source kept as {done}"
    )
    return {
        "source": segment.source,
        "segment": segment.name,
        "sha256": segment.sha256,
        "output": str(transcoded.output),
        "mode": transcoded.mode,
        "frames": analysis.frames,
        "inserted": persisted.inserted,
        "outboxed": persisted.outboxed,
        "kept_as": str(done),
    }
