"""Classify stage: frames sampled from an MP4, sent in batches to the model server.

The frames come from the segment's MP4, or, for a recorder set to classify from its
sub-stream, from the sub-stream recording that covers the segment (its export as
downloaded: smaller pictures, several times cheaper to decode, the same instants).

Cache key of a classification: the segment's identity, CLASSIFY_VERSION, what it reads
(the transcode key of the MP4, so new footage or other transcode options classify again;
or the sub-stream recording's identity), the model's output settings (name, signature,
input size, labels, top-k), the version the server answered with at the start of the run,
and the frame choice (the sampling rate, or key frames only). It never expires: the same
inputs give the same labels.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.model_server import TFServingModel
from blocks.recorder import DownloadResult
from core.segment import Segment, stage_key
from flows import retry_policy
from flows.caching import StageKey
from video.classify import Classification, classify_video
from video.transcode import TranscodeResult

CLASSIFY_VERSION = 1
# Segments classified or detected at once in one process (a flow run, under the process worker),
# per kind of model. The model server takes both cores and each segment keeps two calls in flight,
# so more at once gains no speed, only frames in memory. A detection holds more of them (whole
# frames decoded ahead, in flight, and its decoder's pictures: ~60 MB against ~20 MB), so one at
# a time keeps a flow run near 300 MB.
AT_ONCE = {"classifier": 2, "detector": 1}
_slots = {kind: threading.BoundedSemaphore(n) for kind, n in AT_ONCE.items()}


@contextmanager
def claim_model_slot(segment: Segment, kind: str) -> Iterator[None]:
    """One of this process's slots for the kind of model, for the segment's frames (said when it waits)."""
    slots = _slots[kind]
    if not slots.acquire(blocking=False):
        get_run_logger().info(
            f"{segment.label}: waiting for one of the {AT_ONCE[kind]} {kind} slots of this flow run's process"
        )
        slots.acquire()
    try:
        yield
    finally:
        slots.release()


@dataclass(frozen=True)
class SubStream:
    """The sub-stream recording that covers a segment, and its export."""

    segment: Segment
    download: DownloadResult


def classify_key(
    segment: Segment,
    source: TranscodeResult | SubStream,
    model: TFServingModel,
    model_version: int,
    fps: float,
    key_frames: bool = False,
) -> str:
    frames: dict[str, Any] = {"frames": "key"} if key_frames else {"fps": fps}
    read = {"sub": source.segment.key} if isinstance(source, SubStream) else {"mp4": source.key}
    settings: dict[str, Any] = model.output_settings() | {"version": model_version} | read | frames
    return stage_key(segment, "classify", CLASSIFY_VERSION, settings)


def _key_of(inputs: dict[str, Any]) -> str:
    return classify_key(
        inputs["segment"], inputs["source"], inputs["model"], inputs["model_version"], inputs["fps"],
        inputs.get("key_frames", False),
    )  # fmt: skip


@task(name="classify", task_run_name="classify {segment.label}", cache_policy=StageKey(key_of=_key_of),
      **retry_policy.MEDIA)  # fmt: skip
def classify_segment(
    segment: Segment,
    source: TranscodeResult | SubStream,
    model: TFServingModel,
    model_version: int,
    fps: float = 1.0,
    key_frames: bool = False,
) -> Classification:
    """Labels of the segment's frames, read from its MP4 or from the sub-stream that covers it.

    `model_version` is the version checked at the start of the run: part of the cache key.
    """
    key = classify_key(segment, source, model, model_version, fps, key_frames)
    if isinstance(source, TranscodeResult):
        video, video_start = source.output, segment.start
    else:
        video, video_start = source.download.path, source.segment.start
    with claim_model_slot(segment, model.kind), model.connect() as client:
        frames, detections = classify_video(
            video, video_start, client, model.input_size, model.batch_size, fps, key_frames
        )
        version = client.version
    result = Classification(model.model_name, version, frames, detections, key=key)
    if isinstance(source, SubStream):
        return result.within(segment.start, segment.end or source.segment.end or segment.start)
    return result


@task(name="check model", cache_policy=NO_CACHE, **retry_policy.MODEL_CHECK)
def check_model(model: TFServingModel) -> int:
    """Check once per run that the served model matches the block; returns the version served.

    A mismatch (ModelMismatch) is not retryable: the run fails after this one attempt.
    """
    with model.connect() as client:
        return client.check_metadata()
