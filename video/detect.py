"""People and vehicles in one video file: sampled frames -> motion -> regions -> detector ->
boxes per frame -> tracked objects with thumbnails.

Frigate's way on live streams, here on recorded footage faster than real time: each sampled frame
is decoded once, at full size; a cheap motion test says where to look; the detector sees squares
around what moves (and around the objects being followed), scaled to its input; every
`full_look_s` seconds it looks at every open object, so that what stopped moving is kept, and every
`whole_look_s` seconds (and first) at the whole frame, for what was there before anything moved.
Regions are sized by what they look at (`video.regions.square_region`), down to `region_min_side`,
well under the model's input: a small person or car is enlarged, which a small detector finds
far more surely than the same thing at its own size. A close-up also shows the detector "people"
and "cars" in the grass and rocks around: a region's box counts only where it lies on what the
region was cut around (its motion, its followed objects); the whole-frame look's boxes all count.
A box too small to be anything (`min_box_share` of the frame's height) is dropped, and so is a
passenger's: a "person" inside a vehicle's box, wholly above or below its middle (heads in a bus's
windows, its wheels).
An object followed surely (counted, its velocity known, found by its look before last) is looked
at every `follow_every_s` seconds, not every frame, and motion lying where it is expected needs no
look either; if it stops or turns, its motion lies elsewhere and is looked at. An object expected
out of the frame is not looked for. The last frame looks at every open object, none skipped.
The motion test reads the decoded luma as is; a frame becomes RGB only when the detector looks at it.
`regions=False` shows the detector every sampled frame whole instead (to compare, or for cameras
where everything of interest is large).

The detector is anything with `input_size`, `batch_size` and `detect_batches` (the TF Serving
block's client, `blocks.model_server.ModelClient`): each frame's crops are one call, with the
next frame's call sent while the model runs this one. A frame with nothing to look at ends such
a burst of calls: their answers are all tracked before the next frame's regions are chosen from
the open objects (else an object found by the burst's last call would miss its next look).
Memory holds a few whole frames (decoded ahead, in flight) and one small picture per open object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from video.frames import FullFrame, sample_images
from video.motion import MotionDetector, MotionSettings
from video.regions import (
    HEIGHT_MULTIPLIER,
    WIDTH_MULTIPLIER,
    Candidate,
    FloatBox,
    View,
    cut,
    intersection,
    regions,
    suppress,
    whole_frame,
)
from video.tracking import FrameBox, TrackedObject, Tracker, TrackingSettings

T = TypeVar("T")
CUE_SHARE = 0.25  # of a region's box that must lie on its motion or followed objects
FOLLOWED_SHARE = 0.5  # of a motion box lying on an object followed surely: that object's motion
PASSENGER_SHARE = 0.9  # of a passenger's box that lies inside their vehicle's
ACROSS_KINDS_IOU = 0.6  # boxes of two kinds that overlap more are one thing, named by the better score
NormalisedBox = tuple[float, float, float, float]  # x0, y0, x1, y1 as shares of the image's sides
Found = tuple[str, float, NormalisedBox]


class Detector(Protocol):
    """What `detect_video` needs of a detector (`blocks.model_server.ModelClient` of a detector block)."""

    @property
    def input_size(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def score_threshold(self) -> float: ...

    def detect_batches(
        self, batches: Iterable[tuple[T, np.ndarray]]
    ) -> Iterator[tuple[T, list[list[Found]]]]: ...


@dataclass(frozen=True)
class DetectSettings:
    """Which frames, where the detector looks, and how detections become objects."""

    fps: float = 1.0
    key_frames: bool = False  # only the key frames (see video.frames)
    max_width: int | None = None  # frames wider are scaled down first (a 4K main stream)
    regions: bool = True  # False: every sampled frame whole, no motion test
    full_look_s: float = 5.0  # every open object, moving or not, this often
    follow_every_s: float = 2.0  # an object followed surely, and the motion on it: looked at this often
    whole_look_s: float = 30.0  # the whole frame, this often (and first): what never moved
    region_multiplier: float = HEIGHT_MULTIPLIER  # a region's side is at least this times its box's height
    region_width_multiplier: float = WIDTH_MULTIPLIER  # ... and this times its width
    region_min_side: int | None = 160  # frame pixels; None: the model's input size
    # A box whose longer side is shorter than this share of the frame's height is dropped (29 px at
    # 720p): too small to recognise, and in a close-up mostly the detector reading texture (a 15 px
    # "car" beside a person's head, a 10 px "person" in a bus's window).
    min_box_share: float = 0.04
    # A "person" inside a vehicle's box and wholly above or below its middle is part of it (a head
    # in a bus's window, a driver, a wheel): not someone on foot, it is dropped. Someone in front of
    # a vehicle reaches across its middle.
    passengers: tuple[str, ...] = ("person",)
    carriers: tuple[str, ...] = ("car", "truck", "bus")
    timeout_s: float = 600.0  # for the whole video, decoding and detector calls together
    motion: MotionSettings = field(default_factory=MotionSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    def __post_init__(self) -> None:
        if self.regions and self.full_look_s >= self.tracking.lost_after_s:
            raise ValueError(
                f"full_look_s ({self.full_look_s}) must be shorter than tracking.lost_after_s "
                f"({self.tracking.lost_after_s}): objects that stop moving would be lost between looks"
            )


@dataclass(frozen=True)
class BoxDetection:
    """One box of one sampled frame, in frame pixels (x0, y0, x1, y1)."""

    at: datetime
    label: str
    score: float
    box: FloatBox


@dataclass
class VideoDetections:
    """What the detector found in one video, and what it cost."""

    width: int = 0
    height: int = 0
    frames: int = 0  # sampled
    motion_frames: int = 0  # sampled frames with motion
    detector_calls: int = 0  # Predict calls
    crops: int = 0  # images sent to the detector
    boxes: list[BoxDetection] = field(default_factory=list)
    objects: list[TrackedObject] = field(default_factory=list)  # counted ones, by start


@dataclass
class _Pending:
    """A sampled frame between decoding and tracking: its views and the answers come back so far."""

    at: datetime
    frame: np.ndarray | None
    views: list[View]
    cues: list[FloatBox]  # what the regions were cut around: motion and followed objects
    answers: list[list[Found]] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return len(self.answers) == len(self.views)


def detect_video(
    video: Path, start: datetime, detector: Detector, settings: DetectSettings | None = None
) -> VideoDetections:
    """Boxes and tracked objects of one video whose first frame is at `start` (UTC).

    The caller checks the served model first (`ModelClient.check_metadata`) and reads the version
    it answered with (`ModelClient.version`) after.
    """
    s = settings or DetectSettings()
    result = VideoDetections()
    motion = MotionDetector(s.motion)
    tracker = Tracker(s.tracking, start_score=detector.score_threshold)
    size, batch_size = detector.input_size, detector.batch_size
    order: deque[_Pending] = deque()  # frames in time order, tracked once answered
    last_full: datetime | None = None
    last_whole: datetime | None = None

    def track_answered() -> None:
        while order and order[0].answered:
            pending = order.popleft()
            min_side = s.min_box_share * result.height
            boxes = _frame_boxes(pending, result.width, result.height, min_side, tracker.settings.kind)
            boxes = _on_foot(boxes, s.passengers, s.carriers)
            result.objects += tracker.update(pending.at, boxes, pending.frame if boxes else None)
            result.boxes += [BoxDetection(pending.at, b.label, b.score, b.box) for b in tracker.used]

    def due(last: datetime | None, at: datetime, every_s: float) -> bool:
        return last is None or (at - last).total_seconds() >= every_s - 1e-3

    images = sample_images(
        video, s.max_width, fps=s.fps, timeout_s=s.timeout_s, start=start, key_frames=s.key_frames
    )
    frames = _with_last(images)  # one for all bursts: it reads a frame ahead
    done = False

    def burst() -> Iterator[tuple[_Pending, np.ndarray]]:
        """The crops of successive frames with something to look at, up to one with nothing."""
        nonlocal last_full, last_whole, done
        for (offset, decoded), last in frames:
            at = start + timedelta(milliseconds=round(offset * 1000))
            result.height, result.width = decoded.height, decoded.width
            result.frames += 1
            # The last frame looks at every open object, none skipped: one still there ends at
            # the video's end (and its next segment's part starts at the same boundary).
            full = last or due(last_full, at, s.full_look_s)
            whole = due(last_whole, at, s.whole_look_s)
            last_full = at if full else last_full
            last_whole = at if whole else last_whole
            follow_every_s = 0.0 if last else s.follow_every_s
            views, cues = _views(decoded, at, full, whole, follow_every_s, s, motion, tracker, size, result)
            frame = decoded.rgb() if views else None
            pending = _Pending(at, frame, views, cues)
            order.append(pending)
            if frame is None:
                return  # the burst's last answers are tracked before the next frame's views are chosen
            for first in range(0, len(views), batch_size):
                crops = cut(frame, views[first : first + batch_size], size)
                result.detector_calls += 1
                result.crops += len(crops)
                yield pending, crops
        done = True

    try:
        while not done:
            for pending, answers in detector.detect_batches(burst()):
                pending.answers += answers
                track_answered()
            track_answered()
    finally:
        images.close()
    result.objects += tracker.finish()
    result.objects.sort(key=lambda o: (o.start, o.id))
    return result


def _with_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Each item, and whether it is the last."""
    iterator = iter(items)
    try:
        item = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield item, False
        item = following
    yield item, True


def _views(
    frame: FullFrame,
    at: datetime,
    full: bool,
    whole: bool,
    follow_every_s: float,
    s: DetectSettings,
    motion: MotionDetector,
    tracker: Tracker,
    size: int,
    result: VideoDetections,
) -> tuple[list[View], list[FloatBox]]:
    """The views of a frame for the detector, and the boxes its regions were cut around."""
    height, width = frame.height, frame.width
    if not s.regions:
        return [whole_frame(width, height)], []
    moving = motion.detect(frame.grey(), limited_range=frame.limited_range)
    result.motion_frames += bool(moving)
    looks = tracker.look_at(at, width, height, moving_only=not full, every_s=follow_every_s)
    boxes: list[FloatBox] = [(float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in moving]
    boxes = [b for b in boxes if not _on_cue(b, looks.followed, FOLLOWED_SHARE)]
    # what lies past the frame's edge cannot be seen: a look at an object leaving is cut to the frame
    boxes += [(max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height)) for x0, y0, x1, y1 in looks.look]
    views = regions(
        boxes,
        width,
        height,
        s.region_min_side or size,
        s.region_multiplier,
        width_multiplier=s.region_width_multiplier,
        input_size=size,
    )
    if whole:
        views.append(whole_frame(width, height))
    return views, boxes + looks.followed


def _frame_boxes(
    pending: _Pending, width: int, height: int, min_side: float, kind: Callable[[str], str]
) -> list[FrameBox]:
    """The frame's detections, one per object. A box whose longer side is under `min_side` is
    dropped, and so is a region's box that lies outside what the region was cut around (its
    motion, its followed objects): a region is a close-up, and in a close-up the detector also
    finds people and cars in the grass and rocks around, still."""
    candidates = []
    for view, found in zip(pending.views, pending.answers, strict=True):
        for label, score, normalised in found:
            box = view.to_frame(normalised, width, height)
            big = max(box[2] - box[0], box[3] - box[1]) >= min_side and box[2] > box[0] and box[3] > box[1]
            if big and (view.whole or _on_cue(box, pending.cues)):
                cut, edges = view.cuts(box, width, height), view.cut_edges(box, width, height)
                candidates.append(Candidate(label, score, box, cut=cut, cut_edges=edges))
    return [
        FrameBox(c.label, c.score, c.box, c.cut_edges)
        for c in suppress(candidates, kind=kind, across=ACROSS_KINDS_IOU)
    ]


def _on_foot(boxes: list[FrameBox], passengers: tuple[str, ...], carriers: tuple[str, ...]) -> list[FrameBox]:
    """The boxes but passengers': of a `passengers` label, inside (PASSENGER_SHARE of it) a box of
    a `carriers` label of the same frame and wholly above or below its middle."""
    vehicles = [b.box for b in boxes if b.label in carriers]

    def aboard(box: FloatBox) -> bool:
        area = (box[2] - box[0]) * (box[3] - box[1])
        return any(
            intersection(box, v) >= PASSENGER_SHARE * area
            and (box[3] <= (v[1] + v[3]) / 2 or box[1] >= (v[1] + v[3]) / 2)
            for v in vehicles
        )

    return [b for b in boxes if b.label not in passengers or not aboard(b.box)]


def _on_cue(box: FloatBox, cues: list[FloatBox], share: float = CUE_SHARE) -> bool:
    area = (box[2] - box[0]) * (box[3] - box[1])
    return any(intersection(box, cue) >= share * area for cue in cues)
