"""Detections of one camera joined across sampled frames into objects: what was there, from when to
when, and its best picture.

Operators ask "when was a person or a vehicle on this camera, show me", not "which frames had a
box": so each detection is joined to an object of the same kind seen before (its label, or
car, truck and bus alike: a detector calls one pickup by each in turn), by the overlap of
its box with where that object is expected now (its last box moved by its last velocity), or,
frames being a second apart and a walking person moving about their own width in that time, by
the distance of their centres (to where it is expected, or to where it would be after
LOOK_AHEAD_S: it may have stopped while unseen; or, from where it stood, as far as its top speed
takes it in the time unseen: it may have walked on), if its size is like the object's (a child
far off is not the man who just walked out of the frame close by). An object expected wholly
outside the frame left it: a box joins it by overlap only (who enters there later is another).
A box left over that overlaps one which joined an object in the same frame is that object seen
twice (by two regions) and starts nothing. Assignment is optimal per kind
(Hungarian), so two people crossing stay two. The velocity is the step of the box's centre, or,
where a box shows part of the object (cut by the frame's edge or the region's the detector saw,
or much smaller than the last: half hidden), of its edges that are the object's own: a bus
entering from the frame's edge, then seen in part by a region cut around its back, does not
seem to drive backwards. An object counts once seen in `min_frames` frames (one lone box is
more often a false detection than a visit); it ends `lost_after_s` seconds after it was last seen
(one not counted yet: `tentative_lost_after_s`), its end being that last sighting. Objects that
stop moving are looked at again by the detector's periodic look at every open object, which must
come more often than `lost_after_s`.

Detections scored under `start_score` only follow objects already open, never start one (the
hysteresis of ByteTrack): a small person standing still, or half hidden, scores 0.2-0.4 where
the same person walking scored 0.6, and is one visit, not two; a false box of 0.3 on a bush
starts nothing. They join after the confident ones, and only by overlapping where an open
object is expected or was last seen (`weak_min_iou`), never by distance alone; an object counts
once seen by confident boxes in `min_frames` frames.

Each object keeps a small copy of the frame of its best score only; the thumbnail, JPEG with the
box drawn, is made once, when the object ends.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from PIL import Image, ImageDraw

from video.assignment import min_cost_pairs
from video.regions import NOT_CUT, Edges, FloatBox, box_union, iou

_NO_MATCH = 1e6
LOOK_AHEAD_S = 2.0  # an object unseen for longer is looked for where it would be by then


@dataclass(frozen=True)
class TrackingSettings:
    """How detections are joined into objects."""

    # Labels a detector gives the same thing by turns (a pickup is a car in one frame, a truck in
    # the next): their detections join one object, labelled as its best-scored detection.
    same_kind: tuple[tuple[str, ...], ...] = (("car", "truck", "bus"),)
    min_frames: int = 2  # an object counts once seen in this many frames by confident boxes
    lost_after_s: float = 12.0  # an object ends when not seen for this long
    tentative_lost_after_s: float = 3.0  # ... one not counted yet (most are false detections)
    min_iou: float = 0.1  # overlap with the expected box that joins a detection at once
    # A box left over that overlaps one that joined an object in the same frame this much is that
    # object seen twice (one region saw part of a truck, another all of it): it starts nothing.
    twice_iou: float = 0.3
    weak_min_iou: float = 0.3  # ... a detection under the start score: it joins by this overlap only
    max_distance: float = 1.5  # else centres at most this many times the object's size apart
    # ... or this many, from an object seen once: its velocity is not known yet, and a car at
    # 40 km/h moves about three of its lengths between frames a second apart.
    max_distance_first: float = 4.0
    # ... and its size (longer side) at most this many times larger or smaller than the object's
    # best box: a child far off is not the man who just walked out of the frame close by.
    max_size_ratio: float = 3.0
    moving: float = 0.1  # an object moved when its centre moved by this share of its size
    # A box this many times wider or narrower, taller or shorter than the object's last box shows
    # part of it (cut by the frame's or a region's edge, half hidden): its centre is off, its
    # velocity is read from an edge that is its own (`_step`).
    reshaped: float = 1.5
    thumbnail_width: int = 320
    thumbnail_quality: int = 80

    def kind(self, label: str) -> str:
        """The label's kind: the first label of its `same_kind` group, or the label itself."""
        return next((group[0] for group in self.same_kind if label in group), label)


@dataclass(frozen=True)
class FrameBox:
    """One detection of one frame: label, score, box in frame pixels (x0, y0, x1, y1), and which
    of its edges lie on the frame's or its region's edge (`video.regions.View.cut_edges`)."""

    label: str
    score: float
    box: FloatBox
    cut_edges: Edges = NOT_CUT


@dataclass
class TrackedObject:
    """A thing seen in successive frames: its label, first and last sighting, best sighting."""

    id: int
    label: str
    start: datetime
    end: datetime
    best_score: float
    best_time: datetime
    best_box: FloatBox
    frames: int = 1
    confident_frames: int = 1  # of them, by a box scored at least the tracker's start_score
    last_box: FloatBox = (0.0, 0.0, 0.0, 0.0)
    last_cut_edges: Edges = NOT_CUT  # the last box's edges that are not the object's own
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels a second, of the box's centre
    top_speed: float = 0.0  # pixels a second, the fastest it moved
    moved: bool = True  # its centre moved at its last sighting
    last_look: datetime | None = None  # when the detector was last shown where it was expected
    look_before: datetime | None = None  # ... and the time before that
    thumbnail: bytes | None = None  # JPEG of the best frame with the box drawn, made when it ends
    _best_picture: np.ndarray | None = field(default=None, repr=False)
    _picture_scale: float = field(default=1.0, repr=False)

    def expected_box(self, at: datetime) -> FloatBox:
        """Its last box moved by its velocity to `at`."""
        dt = (at - self.end).total_seconds()
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x0, y0, x1, y1 = self.last_box
        return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)

    def ahead_box(self, at: datetime) -> FloatBox:
        """Its expected box at `at`, moved on for at most LOOK_AHEAD_S after its last sighting."""
        return self.expected_box(min(at, self.end + timedelta(seconds=LOOK_AHEAD_S)))

    def gone(self, at: datetime, width: float, height: float) -> bool:
        """True if its ahead box at `at` lies wholly outside the `width` x `height` frame: it left."""
        x0, y0, x1, y1 = self.ahead_box(at)
        return x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0


@dataclass
class Looks:
    """`Tracker.look_at`'s answer: boxes to look at, and boxes of objects followed closely
    enough to be skipped in this frame."""

    look: list[FloatBox] = field(default_factory=list)
    followed: list[FloatBox] = field(default_factory=list)


class Tracker:
    """Objects of one camera's frames, fed in time order with `update`; `finish` at the end."""

    def __init__(self, settings: TrackingSettings | None = None, start_score: float = 0.0) -> None:
        self.settings = settings or TrackingSettings()
        self.start_score = start_score  # detections scored under it only follow open objects
        self.active: list[TrackedObject] = []
        self.used: list[FrameBox] = []  # the last update's boxes that started or followed an object
        self._updated: datetime | None = None  # the last update's time
        self._next_id = 1

    def update(
        self, at: datetime, boxes: Sequence[FrameBox], frame: np.ndarray | None = None
    ) -> list[TrackedObject]:
        """Join a frame's detections to the objects; the objects that ended (counted ones only).

        `frame` (uint8 [H, W, 3] RGB) is needed when there are boxes: it gives the thumbnails.
        """
        ended = self._expire(at)
        self._updated = at
        confident = [b for b in boxes if b.score >= self.start_score]
        weak = [b for b in boxes if b.score < self.start_score]
        self.used = []
        frame_size = (frame.shape[1], frame.shape[0]) if frame is not None else None
        new = self._follow(at, self.active, confident, frame, frame_size)
        self._follow(at, [t for t in self.active if t.end < at], weak, frame, frame_size, known_only=True)
        new = [b for b in new if not self._seen_twice(b)]
        for box in new:
            self._start(at, box, frame)
        self.used += new
        return ended

    def _follow(
        self,
        at: datetime,
        tracks: list[TrackedObject],
        boxes: list[FrameBox],
        frame: np.ndarray | None,
        frame_size: tuple[int, int] | None,
        known_only: bool = False,
    ) -> list[FrameBox]:
        """Extend the tracks by the boxes they pair with (per kind); the boxes left over."""
        kind = self.settings.kind
        left = list(boxes)
        for label in sorted({kind(b.label) for b in boxes}):
            mine = [t for t in tracks if kind(t.label) == label]
            theirs = [b for b in left if kind(b.label) == label]
            for track_index, box_index in self._assign(at, mine, theirs, frame_size, known_only):
                box = theirs[box_index]
                self._extend(mine[track_index], at, box, frame)
                self.used.append(box)
                left.remove(box)
        return left

    def _seen_twice(self, box: FrameBox) -> bool:
        """True if the box overlaps one of its kind that joined an object in this frame."""
        kind = self.settings.kind
        return any(
            kind(u.label) == kind(box.label) and iou(u.box, box.box) >= self.settings.twice_iou
            for u in self.used
        )

    def finish(self) -> list[TrackedObject]:
        """The objects still open, ended at their last sighting (counted ones only)."""
        ended, self.active = self.active, []
        return [self._close(t) for t in ended if self._counted(t)]

    def look_at(
        self, at: datetime, width: float, height: float, moving_only: bool = True, every_s: float = 0.0
    ) -> Looks:
        """Where the detector should look at `at` for the open objects: from where each was last
        seen to where it is expected (moved on for at most LOOK_AHEAD_S). The moving ones are worth
        a look in every frame, all of them in the periodic look (which keeps those that stopped).

        An object expected wholly outside the `width` x `height` frame left it (`TrackedObject.gone`):
        it is not looked for (and a box joins it by overlap only). An object followed surely (counted,
        its velocity known, found by the look before last) and looked at less than `every_s` ago
        is skipped: it is in `Looks.followed`, where motion needs no look either. Each object
        returned in `Looks.look` records the look (`last_look`, `look_before`). (The last look's
        answer may not be in yet: the detector's calls are pipelined.)
        """
        looks = Looks()
        for track in self.active:
            ahead = track.ahead_box(at)
            if track.gone(at, width, height) or (moving_only and not track.moved):
                continue
            if self._followed(track, at, every_s):  # unless it stopped, or turned: then motion shows it
                looks.followed.append(track.expected_box(at))
            else:
                looks.look.append(box_union(track.last_box, ahead))
                track.last_look, track.look_before = at, track.last_look
        return looks

    def _followed(self, track: TrackedObject, at: datetime, every_s: float) -> bool:
        if track.last_look is None or track.look_before is None:
            return False
        missed = (
            track.end < track.last_look and self._updated is not None and self._updated >= track.last_look
        )
        return (
            (at - track.last_look).total_seconds() < every_s - 1e-3
            and track.end >= track.look_before
            and not missed
            and track.frames >= 2
            and self._counted(track)
        )

    def _assign(
        self,
        at: datetime,
        tracks: list[TrackedObject],
        boxes: list[FrameBox],
        frame_size: tuple[int, int] | None,
        known_only: bool = False,
    ) -> list[tuple[int, int]]:
        """Pairs of (track, box) indices, optimal. `known_only` (weak boxes): a box joins by
        overlap alone, at least `weak_min_iou`, with where the object is expected or where it was
        last seen (a weak box is mostly an object that stopped)."""
        if not tracks or not boxes:
            return []
        s = self.settings
        cost = np.full((len(tracks), len(boxes)), _NO_MATCH)
        for ti, track in enumerate(tracks):
            expected = track.expected_box(at)
            # ... or it stopped while unseen: where it would be after LOOK_AHEAD_S, at most
            stopped = track.ahead_box(at)
            # ... not if it left the frame: where it is is not known, who enters there is another
            left = frame_size is not None and track.gone(at, *frame_size)
            extent = max(_size(track.best_box), 1.0)  # its last box may show a part of it
            reach = s.max_distance_first if track.frames == 1 else s.max_distance
            # ... or, stopped, it may have set off again at the speed it had
            unseen = (at - track.end).total_seconds()
            set_off = 0.0 if track.moved else track.top_speed * unseen / extent
            for bi, box in enumerate(boxes):
                overlap = iou(expected, box.box)
                if known_only:
                    overlap = max(overlap, iou(track.last_box, box.box))
                distance = min(_distance(expected, box.box), _distance(stopped, box.box)) / extent
                if overlap >= (s.weak_min_iou if known_only else s.min_iou):
                    cost[ti, bi] = 1.0 - overlap
                elif (
                    (distance <= reach or _distance(track.last_box, box.box) / extent <= set_off)
                    and not known_only
                    and not left
                    and _within(_size(track.best_box), _size(box.box), s.max_size_ratio)
                ):
                    cost[ti, bi] = 1.0 + distance
        return [(r, c) for r, c in min_cost_pairs(cost) if cost[r, c] < _NO_MATCH]

    def _start(self, at: datetime, box: FrameBox, frame: np.ndarray | None) -> None:
        track = TrackedObject(
            id=self._next_id,
            label=box.label,
            start=at,
            end=at,
            best_score=box.score,
            best_time=at,
            best_box=box.box,
            last_box=box.box,
            last_cut_edges=box.cut_edges,
        )
        self._next_id += 1
        self._keep_picture(track, frame)
        self.active.append(track)

    def _extend(self, track: TrackedObject, at: datetime, box: FrameBox, frame: np.ndarray | None) -> None:
        dt = (at - track.end).total_seconds()
        (lx, ly), (nx, ny) = _centre(track.last_box), _centre(box.box)
        if dt > 0:
            track.velocity = _velocity(track, box, dt, self.settings.reshaped)
            track.top_speed = max(track.top_speed, math.hypot(*track.velocity))
        track.moved = math.hypot(nx - lx, ny - ly) > self.settings.moving * max(_size(box.box), 1.0)
        track.end = at
        track.last_box, track.last_cut_edges = box.box, box.cut_edges
        track.frames += 1
        track.confident_frames += box.score >= self.start_score
        if box.score > track.best_score:
            track.best_score, track.best_time, track.best_box = box.score, at, box.box
            track.label = box.label
            self._keep_picture(track, frame)

    def _keep_picture(self, track: TrackedObject, frame: np.ndarray | None) -> None:
        if frame is None:
            return
        height, width = frame.shape[:2]
        scale = min(1.0, self.settings.thumbnail_width / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = Image.fromarray(frame)
        track._best_picture = np.asarray(
            image.resize(size, Image.Resampling.BILINEAR) if scale < 1 else image
        )
        track._picture_scale = scale

    def _expire(self, at: datetime) -> list[TrackedObject]:
        lost = [t for t in self.active if (at - t.end).total_seconds() >= self._lost_after_s(t)]
        if not lost:
            return []
        self.active = [t for t in self.active if t not in lost]
        return [self._close(t) for t in lost if self._counted(t)]

    def _lost_after_s(self, track: TrackedObject) -> float:
        s = self.settings
        return s.lost_after_s if self._counted(track) else s.tentative_lost_after_s

    def _counted(self, track: TrackedObject) -> bool:
        """Seen by confident boxes in `min_frames` frames: an object, not a lone detection."""
        return track.confident_frames >= self.settings.min_frames

    def _close(self, track: TrackedObject) -> TrackedObject:
        if track._best_picture is not None:
            track.thumbnail = thumbnail(
                track._best_picture,
                tuple(v * track._picture_scale for v in track.best_box),  # type: ignore[arg-type]
                self.settings.thumbnail_quality,
            )
            track._best_picture = None
        return track


def thumbnail(picture: np.ndarray, box: FloatBox, quality: int = 80) -> bytes:
    """JPEG of the picture with the box drawn on it."""
    image = Image.fromarray(picture)
    line = max(1, round(image.width / 160))
    ImageDraw.Draw(image).rectangle(box, outline=(255, 48, 48), width=line)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _centre(box: FloatBox) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def _size(box: FloatBox) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def _velocity(track: TrackedObject, box: FrameBox, dt: float, factor: float) -> tuple[float, float]:
    """The object's velocity from its last box to `box`, `dt` seconds later (`_step` per axis)."""
    old, new, was, now = track.last_box, box.box, track.last_cut_edges, box.cut_edges
    vx, vy = (
        _step(
            (old[lo], old[hi]), (new[lo], new[hi]), (was[lo] or now[lo], was[hi] or now[hi]), v * dt, factor
        )
        / dt
        for lo, hi, v in ((0, 2, track.velocity[0]), (1, 3, track.velocity[1]))
    )
    return vx, vy


def _step(
    old: tuple[float, float], new: tuple[float, float], cut: tuple[bool, bool], before: float, factor: float
) -> float:
    """How far an object moved along one axis, its box spanning `old` then `new` (low, high edge);
    `cut`: whether the low, the high edge lay on the frame's or a region's edge in either box.

    The centre's step, if neither edge was cut and neither span is more than `factor` times the
    other; else the step of an edge not cut (of both, the smaller: the other box shows part of
    the object, half hidden); none: `before`, the step at the velocity it had."""
    steps = [new[i] - old[i] for i in (0, 1) if not cut[i]]
    if len(steps) == 2 and _within(old[1] - old[0], new[1] - new[0], factor):
        return sum(steps) / 2
    return min(steps, key=abs) if steps else before


def _within(a: float, b: float, factor: float) -> bool:
    """True if neither length is more than `factor` times the other."""
    small, large = sorted((a, b))
    return large <= factor * max(small, 1e-6)


def _distance(a: FloatBox, b: FloatBox) -> float:
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    return math.hypot(ax - bx, ay - by)
