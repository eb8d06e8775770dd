"""Persist stage: a segment's metadata and detections into ClickHouse, exactly once.

Each batch's deduplication token is the stage key of what it stores (the transcode key
for the `segments` row, the classify key for the detections), so a retried or repeated
insert never adds rows, and a new version of a segment (re-recorded footage, other
options, another model) replaces the old version's rows (`ClickHouseWriter.write`).

When ClickHouse stays unreachable through the task's retries, the last attempt keeps
the batches in this machine's outbox (`blocks/clickhouse_outbox.py`) and completes with
a warning; `flush_outbox` sends them later, deleting each file only after the server
acknowledged it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger

from blocks import clickhouse_outbox
from blocks.clickhouse import Batch, ClickHouseSink, ClickHouseUnavailable
from blocks.clickhouse_schema import BoxRow, DetectionRow, ObjectRow, SegmentRow, WindowRow
from blocks.loading import load_block
from blocks.model_server import TFServingModel
from blocks.video_store import VideoStore, load_video_store
from core.segment import Segment
from core.settings import DEFAULT_SINK_BLOCK, outbox_dir
from core.store import clip_key, thumbnail_key
from flows import retry_policy
from flows.detect import SegmentDetections
from flows.events import announce_objects
from video.classify import Classification
from video.transcode import TranscodeResult

Analysis = Classification | SegmentDetections


@dataclass(frozen=True)
class PersistResult:
    inserted: int
    outboxed: int


@dataclass(frozen=True)
class Destination:
    """Where a run's segments go (ClickHouse, the video store) and what their rows and events carry."""

    sink: ClickHouseSink
    store: VideoStore | None  # where a detector's clips and thumbnails go; a classifier's runs need none
    site: str
    flow_run_id: str
    utc_offset: timedelta = timedelta(0)  # the recorder's clock: its local time is UTC plus this


def _logger():
    """The run's logger inside a flow or task, a plain one when called directly (`task.fn`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("nvrflow.persist")


def segment_batches(
    segment: Segment,
    transcoded: TranscodeResult,
    analysis: Analysis,
    site: str,
    flow_run_id: str,
    now: datetime | None = None,
) -> list[Batch]:
    """The rows of one segment, each batch under the token of the stage that made its rows."""
    now = now or datetime.now(UTC)
    end = segment.end or segment.start + timedelta(seconds=transcoded.duration_s)
    scope = (segment.source, segment.channel, segment.name)
    segments_token = f"segments/{transcoded.key}"
    row = SegmentRow(
        recorder=segment.source, site=site, channel=segment.channel, segment=segment.name,
        start=segment.start, end=end, duration_s=transcoded.duration_s, bytes=segment.size,
        source_codec=transcoded.source_codec, transcode_mode=transcoded.mode,
        output_path=str(transcoded.output), flow_run_id=flow_run_id, exported_at=now,
        version_key=segments_token,
    )  # fmt: skip
    batches = [Batch(SegmentRow.TABLE, segments_token, (row,), scope)]
    if isinstance(analysis, Classification):
        return batches + [_detection_batch(segment, analysis, now, scope)]
    return batches + _object_batches(segment, analysis, site, now, scope)


def _detection_batch(segment: Segment, classification: Classification, now: datetime, scope) -> Batch:
    token = f"detections/{classification.key}"
    rows = tuple(
        DetectionRow(
            recorder=segment.source,
            channel=segment.channel,
            segment=segment.name,
            frame_time=d.frame_time,
            model=classification.model,
            model_version=classification.model_version,
            rank=d.rank,
            label=d.label,
            score=d.score,
            inserted_at=now,
            version_key=token,
        )  # fmt: skip
        for d in classification.detections
    )
    return Batch(DetectionRow.TABLE, token, rows, scope)


def _object_batches(
    segment: Segment, found: SegmentDetections, site: str, now: datetime, scope
) -> list[Batch]:
    boxes_token, objects_token = f"boxes/{found.key}", f"objects/{found.key}"
    boxes = tuple(
        BoxRow(
            recorder=segment.source,
            channel=segment.channel,
            segment=segment.name,
            frame_time=b.at,
            model=found.model,
            model_version=found.model_version,
            label=b.label,
            score=b.score,
            x0=b.box[0],
            y0=b.box[1],
            x1=b.box[2],
            y1=b.box[3],
            inserted_at=now,
            version_key=boxes_token,
        )  # fmt: skip
        for b in found.boxes
    )
    objects = tuple(
        ObjectRow(
            recorder=segment.source,
            site=site,
            channel=segment.channel,
            segment=segment.name,
            object_id=o.object_id,
            label=o.label,
            start=o.start,
            end=o.end,
            best_score=o.best_score,
            best_time=o.best_time,
            x0=o.box[0],
            y0=o.box[1],
            x1=o.box[2],
            y1=o.box[3],
            frame_width=found.width,
            frame_height=found.height,
            frames=o.frames,
            clip=clip_key(segment),
            clip_offset_s=round(max(0.0, (o.start - segment.start).total_seconds()), 3),
            thumbnail=thumbnail_key(segment, o.object_id) if o.thumbnail else "",
            model=found.model,
            model_version=found.model_version,
            inserted_at=now,
            version_key=objects_token,
        )  # fmt: skip
        for o in found.objects
    )
    return [
        Batch(BoxRow.TABLE, boxes_token, boxes, scope),
        Batch(ObjectRow.TABLE, objects_token, objects, scope),
    ]


def store_for(model: TFServingModel, block_name: str) -> VideoStore | None:
    """The video store, for a detector's clips and thumbnails; a classifier's runs keep none."""
    return load_video_store(block_name) if model.kind == "detector" else None


def store_media(
    store: VideoStore | None, segment: Segment, transcoded: TranscodeResult, analysis: Analysis
) -> None:
    """The segment's clip and its objects' thumbnails, into the store every machine reaches."""
    if not isinstance(analysis, SegmentDetections):
        return
    if store is None:
        raise ValueError(f"{segment.label}: objects found, but no video store to keep their clip in")
    clip, key = Path(transcoded.output), clip_key(segment)
    try:
        kept = store.size(key) == clip.stat().st_size  # a re-run: the clip is there already
    except FileNotFoundError:
        kept = False
    if not kept:
        store.put_file(clip, key)
    for o in analysis.objects:
        if o.thumbnail:
            store.put_bytes(o.thumbnail, thumbnail_key(segment, o.object_id))


def persist_batches(sink: ClickHouseSink, batches: list[Batch], outbox: Path | None = None) -> PersistResult:
    """Write every batch; on the last attempt, keep them in the outbox if ClickHouse is unreachable."""
    rows = sum(len(b.rows) for b in batches)
    try:
        with sink.connect() as writer:
            for batch in batches:
                writer.write(batch)
        return PersistResult(inserted=rows, outboxed=0)
    except ClickHouseUnavailable as exc:
        if not retry_policy.is_last_attempt():
            raise
        folder = outbox or outbox_dir()
        for batch in batches:
            clickhouse_outbox.keep(batch, folder)
        _logger().warning(f"{exc}; {rows} rows kept in the outbox {folder}, flush-outbox will send them")
        return PersistResult(inserted=0, outboxed=rows)


@task(
    name="persist", task_run_name="persist {segment.label}", cache_policy=NO_CACHE, **retry_policy.CLICKHOUSE
)
def persist_segment(
    segment: Segment, transcoded: TranscodeResult, analysis: Analysis, to: Destination
) -> PersistResult:
    """The segment's media into the store, then its rows; each object announced as an event."""
    store_media(to.store, segment, transcoded, analysis)
    result = persist_batches(to.sink, segment_batches(segment, transcoded, analysis, to.site, to.flow_run_id))
    if isinstance(analysis, SegmentDetections):
        announce_objects(segment, to.site, analysis, to.utc_offset)
    return result


def window_batches(
    recorder: str, complete: dict[tuple[int, datetime], int], flow_run_id: str, now: datetime | None = None
) -> list[Batch]:
    """Ledger rows for the (channel, hour) windows found complete, with their segment counts.

    The token is the window itself: the first run that completes a window is the one the
    ledger keeps, and a later run of the same window adds nothing.
    """
    now = now or datetime.now(UTC)
    return [
        Batch(
            WindowRow.TABLE,
            f"windows/{recorder}/{channel}/{hour.isoformat()}",
            (WindowRow(recorder, channel, hour, segments, flow_run_id, now),),
        )
        for (channel, hour), segments in sorted(complete.items())
    ]


@task(name="record windows", task_run_name="record windows {recorder}", cache_policy=NO_CACHE,
      **retry_policy.CLICKHOUSE)  # fmt: skip
def record_windows(
    recorder: str, complete: dict[tuple[int, datetime], int], sink: ClickHouseSink, flow_run_id: str
) -> PersistResult:
    """Mark the windows complete in the ledger (through the outbox when ClickHouse is down)."""
    return persist_batches(sink, window_batches(recorder, complete, flow_run_id))


@flow(name="flush-outbox")
def flush_outbox(sink_block: str = DEFAULT_SINK_BLOCK, alert_after_minutes: float = 60) -> dict[str, int]:
    """Send the rows kept on disk while ClickHouse was unreachable.

    Args:
        sink_block: Name of the ClickHouseSink block to send them to.
        alert_after_minutes: When batches still wait after this long, an `nvrflow.outbox.stale`
            event is sent (the "stale outbox" automation turns it into a notification).
    """
    folder = outbox_dir()
    sent, remaining = clickhouse_outbox.flush(load_block(ClickHouseSink, sink_block), folder)
    get_run_logger().info(f"outbox: {sent} batches sent, {remaining} still waiting")
    if remaining:
        oldest = clickhouse_outbox.oldest_age_s(folder)
        if oldest >= alert_after_minutes * 60:
            emit_event(
                "nvrflow.outbox.stale",
                resource={"prefect.resource.id": f"nvrflow.outbox.{socket.gethostname()}",
                          "nvrflow.host": socket.gethostname(), "nvrflow.folder": str(folder)},
                payload={"batches": remaining, "minutes": round(oldest / 60)},
            )  # fmt: skip
        raise ClickHouseUnavailable(f"{remaining} outbox batches could not be sent; they stay on disk")
    return {"sent": sent, "remaining": remaining}
