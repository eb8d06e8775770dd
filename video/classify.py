"""Classifying a video: sampled frames in batches through a classifier, top-k labels per frame.

Prefect-free: the caller hands in a connected classifier (`blocks.model_server.ModelClient`,
or anything with the same `classify_batches`), the frame size and the batch size it takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from video.frames import sample_frames

T = TypeVar("T")


class BatchClassifier(Protocol):
    def classify_batches(
        self, batches: Iterable[tuple[T, np.ndarray]]
    ) -> Iterator[tuple[T, list[list[tuple[str, float]]]]]: ...


@dataclass(frozen=True)
class Detection:
    """One label of one sampled frame: its time (UTC), rank in the frame's top-k, and score."""

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

    def top_labels(self, k: int = 3) -> list[tuple[str, int]]:
        """The `k` labels most often ranked first, with how many frames."""
        counts: dict[str, int] = {}
        for d in self.detections:
            if d.rank == 1:
                counts[d.label] = counts.get(d.label, 0) + 1
        return sorted(counts.items(), key=lambda kv: -kv[1])[:k]

    def within(self, start: datetime, end: datetime) -> Classification:
        """Only the frames in [start, end): a sub-stream file may run a little past its segment's ends."""
        kept = [d for d in self.detections if start <= d.frame_time < end]
        return Classification(
            self.model, self.model_version, len({d.frame_time for d in kept}), kept, self.key
        )


def classify_video(
    video: Path,
    start: datetime,
    client: BatchClassifier,
    size: int,
    batch: int,
    fps: float = 1.0,
    key_frames: bool = False,
) -> tuple[int, list[Detection]]:
    """Top-k labels of one frame a second (or `fps`, or each key frame), frame times in UTC from
    `start`; returns (frames classified, their labels)."""
    detections: list[Detection] = []
    frames = 0
    batches = sample_frames(video, size, fps=fps, batch=batch, start=start, key_frames=key_frames)
    with closing(batches):  # the decoder stops at once when a call fails
        for offsets, tops in client.classify_batches(batches):
            for offset, top in zip(offsets, tops, strict=True):
                at = start + timedelta(milliseconds=round(offset * 1000))
                for rank, (label, score) in enumerate(top, start=1):
                    detections.append(Detection(at, rank, label, float(score)))
            frames += len(tops)
    return frames, detections
