"""Classify stage: frames sampled from an MP4, sent in batches to the model server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from prefect import task
from prefect.tasks import exponential_backoff

from blocks.model_server import TFServingModel
from flows.frames import sample_frames
from flows.transcode import TranscodeResult


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


def classify_video(
    video: Path, start: datetime, model: TFServingModel, fps: float = 1.0, check: bool = True
) -> Classification:
    """Top-k labels for one frame a second (or `fps`), frame times in UTC from `start`."""
    detections: list[Detection] = []
    frames = 0
    with model.connect() as client:
        if check:
            client.check_metadata()
        for offsets, batch in sample_frames(
            video, model.input_size, fps=fps, batch=model.batch_size, start=start
        ):
            for offset, top in zip(offsets, client.classify(batch), strict=True):
                at = start + timedelta(milliseconds=round(offset * 1000))
                for rank, (label, score) in enumerate(top, start=1):
                    detections.append(Detection(at, rank, label, float(score)))
            frames += len(batch)
        version = client.version
    return Classification(model.model_name, version, frames, detections)


def classify_key(context, parameters) -> str:
    model: TFServingModel = parameters["model"]
    return (
        f"classify/{parameters['label']}/{model.model_name}/{parameters['model_version']}/{parameters['fps']}"
    )


@task(
    name="classify",
    cache_key_fn=classify_key,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    task_run_name="classify {label}",
)
def classify_segment(
    transcoded: TranscodeResult,
    start: datetime,
    label: str,
    model: TFServingModel,
    model_version: int,
    fps: float = 1.0,
) -> Classification:
    """`model_version` is the version checked at the start of the run: part of the cache key."""
    return classify_video(transcoded.output, start, model, fps=fps, check=False)


@task(name="check model", retries=2, retry_delay_seconds=5)
def check_model(model: TFServingModel) -> int:
    """Check once per run that the served model matches the block; returns the version served."""
    with model.connect() as client:
        client.check_metadata()
        return client.version
