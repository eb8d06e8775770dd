"""Regions of a frame for the detector: squares around motion, cut from the full frame and scaled
to the model's input, and the detector's boxes mapped back to the frame.

A small detector finds a person 40 px tall in a 160-200 px square around them (scaled up to its
input: NanoDet scores such people 0.4-0.8), barely in a 416 px square, and misses the same person
in the whole 1280x720 frame shrunk to 416 px: so the detector looks at squares around what moves
(three times its height, or 1.75 times its width for a car, at least `min_side`), nearby boxes
sharing one square, and now and then at the whole frame, letterboxed, for what stopped moving.

Overlapping squares see the same object twice: non-maximum suppression per label (or per kind:
car, truck and bus are one thing to the tracker) keeps one box, preferring a box that no
square's inner edge cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, x1 and y1 exclusive
FloatBox = tuple[float, float, float, float]  # x0, y0, x1, y1
Edges = tuple[bool, bool, bool, bool]  # left, top, right, bottom
NOT_CUT: Edges = (False, False, False, False)
HEIGHT_MULTIPLIER = 3.0  # a region's side is at least this times its box's height
CLOSE_MULTIPLIER = 2.0  # ... or, where that exceeds the model's input, this (at least the input)
WIDTH_MULTIPLIER = 1.75  # ... and this times its width


@dataclass(frozen=True)
class View:
    """A square of the frame the detector sees: (x0, y0) and side in frame pixels.

    A region lies inside the frame; the whole-frame look is a square of the frame's longest side
    at (0, 0), the part past the frame's edge padded (letterboxing).
    """

    x0: int
    y0: int
    side: int
    whole: bool = False

    @property
    def box(self) -> Box:
        return (self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)

    def to_frame(self, normalised: FloatBox, width: int, height: int) -> FloatBox:
        """A box normalised to this view (x0, y0, x1, y1 in 0..1) in frame pixels, clipped to the frame."""
        x0, y0, x1, y1 = normalised
        return (
            min(max(self.x0 + x0 * self.side, 0.0), float(width)),
            min(max(self.y0 + y0 * self.side, 0.0), float(height)),
            min(max(self.x0 + x1 * self.side, 0.0), float(width)),
            min(max(self.y0 + y1 * self.side, 0.0), float(height)),
        )

    def cut_edges(self, box: FloatBox, width: int, height: int, margin: float = 2.0) -> Edges:
        """Which edges of the box (left, top, right, bottom) lie on this view's edge or the frame's:
        there the object may go on past it, that edge is not its own."""
        x0, y0, x1, y1 = box
        vx0, vy0, vx1, vy1 = self.box
        return (
            x0 <= max(vx0, 0) + margin,
            y0 <= max(vy0, 0) + margin,
            x1 >= min(vx1, width) - margin,
            y1 >= min(vy1, height) - margin,
        )

    def cuts(self, box: FloatBox, width: int, height: int, margin: float = 2.0) -> bool:
        """True if the box touches an edge of this view that is not the frame's: the object may go on past it."""
        vx0, vy0, vx1, vy1 = self.box
        inner = (vx0 > 0, vy0 > 0, vx1 < width, vy1 < height)
        return any(on and i for on, i in zip(self.cut_edges(box, width, height, margin), inner, strict=True))


def square_region(
    box: Sequence[float],
    width: int,
    height: int,
    min_side: int,
    multiplier: float = HEIGHT_MULTIPLIER,
    width_multiplier: float = WIDTH_MULTIPLIER,
    input_size: int | None = None,
) -> View:
    """The square of side max(min_side, multiplier x the box's height, width_multiplier x its
    width), centred on the box, shifted (not shrunk) to lie inside the frame; never larger than the
    frame's shorter side.

    Sized by the height for what stands (a person fills a third of the square's height, the
    detector's best scale for small people, enlarged to the model's `input_size`), by the width for
    what is long and low (a car scores best with a little of the road around it). Where a third
    would need a square larger than `input_size` (the person shrunk for the model), the square is
    CLOSE_MULTIPLIER x the height, at least `input_size`: NanoDet scores a 240 px walker 0.69-0.77
    in a square of twice their height, 0.27-0.40 in one of three times."""
    x0, y0, x1, y1 = box
    tall = multiplier * (y1 - y0)
    if input_size is not None and tall > input_size:
        tall = max(CLOSE_MULTIPLIER * (y1 - y0), float(input_size))
    side = int(max(min_side, tall, width_multiplier * (x1 - x0), x1 - x0, y1 - y0))
    side = max(1, min(side, width, height))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return View(left, top, side)


def regions(
    boxes: Sequence[Sequence[float]],
    width: int,
    height: int,
    min_side: int,
    multiplier: float = HEIGHT_MULTIPLIER,
    growth: float = 1.25,
    width_multiplier: float = WIDTH_MULTIPLIER,
    input_size: int | None = None,
) -> list[View]:
    """Square regions covering the boxes, boxes close together sharing one.

    Two groups of boxes merge when the square around both holds them (a square is never larger
    than the frame's shorter side) and is at most `growth` times the larger of their own squares:
    one look instead of two, with the objects hardly smaller in the model's input.
    """
    sizing = (min_side, multiplier, width_multiplier, input_size)
    groups = [tuple(float(v) for v in b) for b in boxes if b[2] > b[0] and b[3] > b[1]]
    merged = True
    while merged and len(groups) > 1:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                union = box_union(groups[i], groups[j])
                alone = max(
                    square_region(groups[i], width, height, *sizing).side,
                    square_region(groups[j], width, height, *sizing).side,
                )
                joint = square_region(union, width, height, *sizing)
                fits = union[2] - union[0] <= joint.side and union[3] - union[1] <= joint.side
                if fits and joint.side <= growth * alone:
                    groups[i] = union
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return [square_region(g, width, height, *sizing) for g in groups]


def whole_frame(width: int, height: int) -> View:
    """The whole frame as one view: its longest side, letterboxed."""
    return View(0, 0, max(width, height), whole=True)


def cut(frame: np.ndarray, views: Sequence[View], size: int, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [len(views), size, size, 3]: each view of the RGB frame scaled to size x size.

    Each view is one resize from the full frame (no intermediate copy); the whole-frame view keeps
    the frame's aspect ratio and pads the rest with black.
    """
    height, width = frame.shape[:2]
    if out is None:
        out = np.empty((len(views), size, size, 3), dtype=np.uint8)
    image = Image.fromarray(frame)
    for i, view in enumerate(views):
        if view.whole:
            scale = size / view.side
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            out[i] = 0
            out[i, :h, :w] = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR))
        else:
            out[i] = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=view.box))
    return out


@dataclass(frozen=True)
class Candidate:
    """A detector's box in frame pixels, whether its view's inner edge cut it, and which of its
    edges lie on the view's or the frame's edge (`View.cut_edges`)."""

    label: str
    score: float
    box: FloatBox
    cut: bool = False
    cut_edges: Edges = NOT_CUT


def suppress(
    candidates: Sequence[Candidate],
    iou: float = 0.5,
    inside: float = 0.8,
    kind: Callable[[str], str] | None = None,
    across: float | None = None,
) -> list[Candidate]:
    """Non-maximum suppression per label (or per `kind` of label) across views: of boxes that
    overlap (IoU above `iou`, or the smaller one mostly inside the other), the one kept is uncut
    first, then the best scored. With `across`, boxes of other kinds are one thing too when their
    IoU is above it (a far person is also a 0.3 "car"); a person in front of a car is no such fit."""
    kind = kind or (lambda label: label)
    kept: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (c.cut, -c.score)):
        if all(
            not _overlap(other.box, candidate.box, iou, inside)
            if kind(other.label) == kind(candidate.label)
            else across is None or not _overlap(other.box, candidate.box, across, inside=1.0)
            for other in kept
        ):
            kept.append(candidate)
    return sorted(kept, key=lambda c: -c.score)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _overlap(a: FloatBox, b: FloatBox, min_iou: float, inside: float) -> bool:
    inter = intersection(a, b)
    if not inter:
        return False
    smaller = min(_area(a), _area(b))
    return iou(a, b) > min_iou or (smaller > 0 and inter / smaller > inside)


def intersection(a: Sequence[float], b: Sequence[float]) -> float:
    """The area two boxes share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _area(a: Sequence[float]) -> float:
    return max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)


def box_union(a: Sequence[float], b: Sequence[float]) -> FloatBox:
    """The smallest box holding both."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
