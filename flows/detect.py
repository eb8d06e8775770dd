"""Detect stage: people and vehicles in a segment's frames, tracked into objects (`video.detect`).

The frames come from the segment's MP4, or from the sub-stream recording that covers it, as for
the classify stage. Each object gets a stable id from the segment's identity, its label and its
first sighting; the persist stage writes its thumbnail to the video store and its rows.

Cache key of a detection: the segment's identity, DETECT_VERSION, what it reads (the MP4's
transcode key or the sub-stream recording's identity), the detector's output settings (model,
signature, input, labels, score threshold, tracked labels), the version served at the start of
the run, the frame choice and where the detector looks (motion regions or whole frames). It never
expires: the same inputs give the same objects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from blocks.model_server import TFServingModel
from core.segment import Segment, stage_key
from flows import retry_policy
from flows.caching import StageKey
from flows.classify import SubStream, claim_model_slot
from video.detect import BoxDetection, DetectSettings, detect_video
from video.transcode import TranscodeResult

DETECT_VERSION = 1


@dataclass(frozen=True)
class DetectOptions:
    """How a run detects: the frame choice and where the detector looks."""

    fps: float = 1.0
    key_frames: bool = False
    regions: bool = True  # motion regions; False: every sampled frame whole

    def settings(self) -> DetectSettings:
        return DetectSettings(fps=self.fps, key_frames=self.key_frames, regions=self.regions)


@dataclass(frozen=True)
class FoundObject:
    """One tracked object of a segment, as stored: its box in frame pixels, its thumbnail's key."""

    object_id: str
    label: str
    start: datetime
    end: datetime
    best_score: float
    best_time: datetime
    box: tuple[float, float, float, float]
    frames: int
    thumbnail: bytes  # JPEG of the best frame with the box drawn


@dataclass(frozen=True)
class SegmentDetections:
    model: str
    model_version: int
    width: int
    height: int
    frames: int
    detector_calls: int
    boxes: list[BoxDetection]
    objects: list[FoundObject]
    key: str = ""  # the detect stage key these objects were made under

    def top_labels(self, k: int = 3) -> list[tuple[str, int]]:
        """The `k` labels with the most objects, with how many."""
        counts: dict[str, int] = {}
        for o in self.objects:
            counts[o.label] = counts.get(o.label, 0) + 1
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def detect_key(
    segment: Segment, source: TranscodeResult | SubStream, model: TFServingModel, model_version: int,
    options: DetectOptions,
) -> str:  # fmt: skip
    read = {"sub": source.segment.key} if isinstance(source, SubStream) else {"mp4": source.key}
    frames: dict[str, Any] = {"frames": "key"} if options.key_frames else {"fps": options.fps}
    settings = (
        model.output_settings() | {"version": model_version, "regions": options.regions} | read | frames
    )
    return stage_key(segment, "detect", DETECT_VERSION, settings)


def object_id(segment: Segment, label: str, start: datetime) -> str:
    """Stable across re-runs of the same footage and settings: the segment, the label, the first sighting."""
    raw = f"{segment.key}|{label}|{start.isoformat()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _key_of(inputs: dict[str, Any]) -> str:
    return detect_key(
        inputs["segment"], inputs["source"], inputs["model"], inputs["model_version"], inputs["options"]
    )


@task(name="detect", task_run_name="detect {segment.label}", cache_policy=StageKey(key_of=_key_of),
      **retry_policy.MEDIA)  # fmt: skip
def detect_segment(
    segment: Segment,
    source: TranscodeResult | SubStream,
    mp4: TranscodeResult,
    model: TFServingModel,
    model_version: int,
    options: DetectOptions,
) -> SegmentDetections:
    """Objects in the segment's frames, read from its MP4 or from the sub-stream that covers it.

    `mp4` is the segment's MP4, the clip the objects are played from.
    """
    key = detect_key(segment, source, model, model_version, options)
    if isinstance(source, TranscodeResult):
        video, video_start = source.output, segment.start
    else:
        video, video_start = source.download.path, source.segment.start
    with claim_model_slot(segment, model.kind), model.connect() as client:
        found = detect_video(Path(video), video_start, client, options.settings())
        version = client.version
    end = segment.end or segment.start + timedelta(seconds=mp4.duration_s)
    objects = []
    for tracked in found.objects:
        if not segment.start <= tracked.start < end:  # a sub-stream file may run past the segment's ends
            continue
        objects.append(FoundObject(
            object_id(segment, tracked.label, tracked.start), tracked.label, tracked.start, min(tracked.end, end),
            tracked.best_score, tracked.best_time, tracked.best_box, tracked.frames, tracked.thumbnail or b"",
        ))  # fmt: skip
    boxes = [b for b in found.boxes if segment.start <= b.at < end]
    if objects:
        get_run_logger().info(
            f"{segment.label}: "
            + ", ".join(f"{o.label} {o.start:%H:%M:%S}-{o.end:%H:%M:%S}" for o in objects)
        )
    return SegmentDetections(
        model.model_name, version, found.width, found.height, found.frames, found.detector_calls, boxes, objects,
        key=key,
    )  # fmt: skip
