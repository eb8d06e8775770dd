"""Classify stage: frames sampled from an MP4, sent in batches to the model server.

Cache key of a classification: the segment's identity, CLASSIFY_VERSION, the transcode
key of the MP4 it reads (so new footage or other transcode options classify again), the
model's output settings (name, signature, input size, labels, top-k), the version the
server answered with at the start of the run, and the frame choice (the sampling rate, or
key frames only). It never expires: the same inputs give the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.model_server import TFServingModel
from core.segment import Segment, stage_key
from flows import retry_policy
from flows.caching import StageKey
from video.frames import sample_frames
from video.transcode import TranscodeResult

CLASSIFY_VERSION = 1


@dataclass(frozen=True)
class Detection:
    frame_time: datetime
    rank: int
    label: str
    score: float


@dataclass(frozen=True)
class Classification:
    model: str
    model_version: int
    frames: int
    detections: list[Detection]
    key: str = ""  # the classify stage key these labels were made under


def classify_video(
    video: Path,
    start: datetime,
    model: TFServingModel,
    fps: float = 1.0,
    check: bool = True,
    key_frames: bool = False,
) -> Classification:
    """Top-k labels for one frame a second (or `fps`, or each key frame), frame times in UTC from `start`."""
    detections: list[Detection] = []
    frames = 0
    with model.connect() as client:
        if check:
            client.check_metadata()
        for offsets, batch in sample_frames(
            video, model.input_size, fps=fps, batch=model.batch_size, start=start, key_frames=key_frames
        ):
            for offset, top in zip(offsets, client.classify(batch), strict=True):
                at = start + timedelta(milliseconds=round(offset * 1000))
                for rank, (label, score) in enumerate(top, start=1):
                    detections.append(Detection(at, rank, label, float(score)))
            frames += len(batch)
        version = client.version
    return Classification(model.model_name, version, frames, detections)


def classify_key(
    segment: Segment,
    transcoded: TranscodeResult,
    model: TFServingModel,
    model_version: int,
    fps: float,
    key_frames: bool = False,
) -> str:
    frames: dict[str, Any] = {"frames": "key"} if key_frames else {"fps": fps}
    settings: dict[str, Any] = (
        model.output_settings() | {"version": model_version, "mp4": transcoded.key} | frames
    )
    return stage_key(segment, "classify", CLASSIFY_VERSION, settings)


def _key_of(inputs: dict[str, Any]) -> str:
    return classify_key(
        inputs["segment"], inputs["transcoded"], inputs["model"], inputs["model_version"], inputs["fps"],
        inputs.get("key_frames", False),
    )  # fmt: skip


@task(name="classify", task_run_name="classify {segment.label}", cache_policy=StageKey(key_of=_key_of),
      **retry_policy.MEDIA)  # fmt: skip
def classify_segment(
    segment: Segment,
    transcoded: TranscodeResult,
    model: TFServingModel,
    model_version: int,
    fps: float = 1.0,
    key_frames: bool = False,
) -> Classification:
    """`model_version` is the version checked at the start of the run: part of the cache key."""
    result = classify_video(
        transcoded.output, segment.start, model, fps=fps, check=False, key_frames=key_frames
    )
    return Classification(result.model, result.model_version, result.frames, result.detections,
                          key=classify_key(segment, transcoded, model, model_version, fps, key_frames))  # fmt: skip


@task(name="check model", cache_policy=NO_CACHE, **retry_policy.MODEL_CHECK)
def check_model(model: TFServingModel) -> int:
    """Check once per run that the served model matches the block; returns the version served.

    A mismatch (ModelMismatch) is not retryable: the run fails after this one attempt.
    """
    with model.connect() as client:
        return client.check_metadata()
