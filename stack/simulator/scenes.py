"""Scripted scenes: people and vehicles that enter, cross, stop and leave a still place on cue.

A script is the ground truth a detector is scored against. Its JSON form:

    {"version": 1, "background": "pasture", "width": 1280, "height": 720, "seconds": 3600,
     "actors": [{"id": "a001", "cutout": "fireman-a", "label": "person",
                 "path": [[t, x, y, h], ...]}, ...]}

All times are seconds from the channel's recording start. A waypoint `[t, x, y, h]` puts the
actor's bottom centre (feet, wheels) at pixel (x, y) of a `width` x `height` frame, `h` pixels
tall, at time t; between waypoints the actor moves in a straight line (two waypoints at the same
place are a stop). An actor exists from its first waypoint's time to its last; a path starts and
ends with the actor wholly outside the frame, so it enters and leaves by an edge. Frames of
another size show the same script scaled. Footage longer than the script replays it from 0.

"Visible" is `VISIBLE_FRACTION` of the cut-out's opaque area (the sum of its alpha) inside the
frame: half a person stepping in through the edge counts, a hand does not. `truth()` reports
each actor's first and last visible instant (sampled at the footage's frame rate) and its box,
clipped to the frame, at every whole second in between. Actors do not hide one another in the
truth: one drawn over the other (the nearer, lower one on top) still counts as visible.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from stack.simulator.cutouts import BACKGROUNDS, CUTOUTS, cutout_pixels

SCRIPT_VERSION = 1
VISIBLE_FRACTION = 0.5
GENERATED = "generated"  # ChannelSpec.script: a script made by make_script for the recording's length


@dataclass(frozen=True)
class Waypoint:
    t: float
    x: float
    y: float
    h: float


@dataclass(frozen=True)
class Actor:
    id: str
    cutout: str
    path: tuple[Waypoint, ...]

    def __post_init__(self) -> None:
        if self.cutout not in CUTOUTS:
            raise ValueError(
                f"actor {self.id}: unknown cut-out {self.cutout!r}; expected one of {sorted(CUTOUTS)}"
            )
        if len(self.path) < 2 or any(b.t < a.t for a, b in zip(self.path, self.path[1:], strict=False)):
            raise ValueError(f"actor {self.id}: a path needs two or more waypoints in time order")
        if any(w.h <= 0 for w in self.path):
            raise ValueError(f"actor {self.id}: heights must be positive")

    @property
    def label(self) -> str:
        return CUTOUTS[self.cutout].label

    @property
    def start(self) -> float:
        return self.path[0].t

    @property
    def end(self) -> float:
        return self.path[-1].t

    @property
    def mirrored(self) -> bool:
        """Whether the cut-out is drawn mirrored, so it travels forwards (the way its front points)."""
        heading = self.path[-1].x - self.path[0].x
        faces = CUTOUTS[self.cutout].faces
        return (heading > 0 and faces == "left") or (heading < 0 and faces == "right")

    def at(self, t: float) -> Waypoint | None:
        """Where the actor is at time t (interpolated), None outside its time."""
        if t < self.start or t > self.end:
            return None
        for a, b in zip(self.path, self.path[1:], strict=False):
            if a.t <= t <= b.t:
                f = 0.0 if b.t == a.t else (t - a.t) / (b.t - a.t)
                return Waypoint(t, a.x + f * (b.x - a.x), a.y + f * (b.y - a.y), a.h + f * (b.h - a.h))
        return self.path[-1]


@dataclass(frozen=True)
class Script:
    background: str
    width: int
    height: int
    seconds: float
    actors: tuple[Actor, ...]

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {sorted(BACKGROUNDS)}")
        if self.width <= 0 or self.height <= 0 or self.seconds <= 0:
            raise ValueError("a script needs a positive size and length")
        if len({a.id for a in self.actors}) != len(self.actors):
            raise ValueError("two actors share an id")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SCRIPT_VERSION,
            "background": self.background,
            "width": self.width,
            "height": self.height,
            "seconds": float(self.seconds),
            "actors": [
                {
                    "id": a.id,
                    "cutout": a.cutout,
                    "label": a.label,
                    "path": [[float(w.t), float(w.x), float(w.y), float(w.h)] for w in a.path],
                }
                for a in self.actors
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """Names the script in cache keys: equal scripts, equal footage."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def script_from_dict(data: dict[str, Any]) -> Script:
    if data.get("version") != SCRIPT_VERSION:
        raise ValueError(f"script version {data.get('version')!r} is not {SCRIPT_VERSION}")
    actors = []
    for item in data["actors"]:
        actor = Actor(
            str(item["id"]), str(item["cutout"]), tuple(Waypoint(*map(float, w)) for w in item["path"])
        )
        if "label" in item and item["label"] != actor.label:
            raise ValueError(
                f"actor {actor.id}: label {item['label']!r}, but {actor.cutout} is a {actor.label}"
            )
        actors.append(actor)
    return Script(
        str(data["background"]),
        int(data["width"]),
        int(data["height"]),
        float(data["seconds"]),
        tuple(actors),
    )


def load_script(path: str | Path) -> Script:
    return script_from_dict(json.loads(Path(path).read_text()))


# -- where an actor is drawn -----------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """The cut-out's whole rectangle in frame pixels (it may reach outside the frame)."""

    left: int
    top: int
    width: int
    height: int


def place(actor: Actor, t: float, sx: float = 1.0, sy: float = 1.0) -> Placement | None:
    """Pixel rectangle of the actor at time t in a frame scaled by (sx, sy) from the script's.
    Shared by the renderer and the truth, so both round alike."""
    where = actor.at(t)
    if where is None:
        return None
    _, alpha = cutout_pixels(actor.cutout)
    height = max(1, round(where.h * sy))
    width = max(1, round(height * alpha.shape[1] / alpha.shape[0]))
    return Placement(round(where.x * sx - width / 2), round(where.y * sy) - height, width, height)


@functools.lru_cache(maxsize=32)
def _alpha_table(cutout: str, mirrored: bool) -> np.ndarray:
    """Summed-area table of the cut-out's alpha: the opaque area inside any rectangle in O(1)."""
    _, alpha = cutout_pixels(cutout)
    if mirrored:
        alpha = alpha[:, ::-1]
    table = np.zeros((alpha.shape[0] + 1, alpha.shape[1] + 1), dtype=np.float64)
    table[1:, 1:] = alpha.cumsum(axis=0).cumsum(axis=1)
    return table


def visible_box(
    actor: Actor, t: float, width: int, height: int, sx: float = 1.0, sy: float = 1.0
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the actor's part inside a width x height frame, when visible; else None."""
    p = place(actor, t, sx, sy)
    if p is None:
        return None
    x0, y0 = max(p.left, 0), max(p.top, 0)
    x1, y1 = min(p.left + p.width, width), min(p.top + p.height, height)
    if x1 <= x0 or y1 <= y0:
        return None
    table = _alpha_table(actor.cutout, actor.mirrored)
    rows, cols = table.shape[0] - 1, table.shape[1] - 1

    def native(v: int, origin: int, size: int, n: int) -> int:
        return min(n, max(0, round((v - origin) * n / size)))

    r0, r1 = native(y0, p.top, p.height, rows), native(y1, p.top, p.height, rows)
    c0, c1 = native(x0, p.left, p.width, cols), native(x1, p.left, p.width, cols)
    inside = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    if inside < VISIBLE_FRACTION * table[-1, -1]:
        return None
    return (x0, y0, x1, y1)


# -- the truth -------------------------------------------------------------------------------------


def truth(
    script: Script,
    recording_start_utc: datetime,
    fps: int = 10,
    width: int | None = None,
    height: int | None = None,
) -> list[dict[str, Any]]:
    """What a perfect detector reports: one object per actor seen, in order of appearance.

    Each object: id, label, cutout, first_visible_utc and last_visible_utc (ISO 8601, instants
    of frames at `fps`), and `boxes`: {"t": seconds from the recording start, "utc", "box": [x0, y0,
    x1, y1] in pixels of a `width` x `height` frame (the script's own size by default)} at every
    whole second the actor is visible. One pass of the script: footage longer than it repeats it.
    """
    width, height = width or script.width, height or script.height
    sx, sy = width / script.width, height / script.height
    objects = []
    for actor in script.actors:
        first_frame = math.ceil(actor.start * fps)
        last_frame = math.floor(min(actor.end, script.seconds) * fps)
        seen = [
            k / fps
            for k in range(first_frame, last_frame + 1)
            if visible_box(actor, k / fps, width, height, sx, sy)
        ]
        if not seen:
            continue
        boxes = []
        for second in range(math.ceil(seen[0]), math.floor(seen[-1]) + 1):
            box = visible_box(actor, float(second), width, height, sx, sy)
            if box is not None:
                utc = recording_start_utc + timedelta(seconds=second)
                boxes.append({"t": second, "utc": utc.isoformat(), "box": list(box)})
        objects.append(
            {
                "id": actor.id,
                "label": actor.label,
                "cutout": actor.cutout,
                "first_visible_utc": (recording_start_utc + timedelta(seconds=seen[0])).isoformat(),
                "last_visible_utc": (recording_start_utc + timedelta(seconds=seen[-1])).isoformat(),
                "boxes": boxes,
            }
        )
    objects.sort(key=lambda o: (o["first_visible_utc"], o["id"]))
    return objects


def in_view_fraction(script: Script, step: float = 1.0) -> float:
    """Share of the script's time with at least one actor visible (sampled every `step` seconds)."""
    samples = np.arange(0.0, script.seconds, step)
    busy = np.zeros(len(samples), dtype=bool)
    for actor in script.actors:
        for i in np.flatnonzero((samples >= actor.start) & (samples <= actor.end)):
            if not busy[i] and visible_box(actor, float(samples[i]), script.width, script.height):
                busy[i] = True
    return float(busy.mean()) if len(samples) else 0.0


# -- the generator ---------------------------------------------------------------------------------

# Real heights (m) and speeds (m/s) of what the cut-outs show: they set how fast an actor of a
# given size in pixels crosses the frame.
_METRES = {"fireman-a": 1.8, "fireman-b": 1.8, "sedan": 1.4, "convertible": 1.3, "pickup": 1.8,
           "garbage-truck": 3.4, "bus": 3.1}  # fmt: skip
_SPEED = {"person": (1.0, 1.7), "car": (3.0, 11.0), "truck": (3.0, 9.0), "bus": (3.0, 8.0)}
_STOP = {"person": (3.0, 25.0), "car": (5.0, 40.0), "truck": (5.0, 30.0), "bus": (4.0, 15.0)}
_KINDS = [("fireman-a", 3), ("fireman-b", 3), ("sedan", 2), ("convertible", 1), ("pickup", 1),
          ("garbage-truck", 1), ("bus", 1)]  # fmt: skip
_PAIR_CHANCE = 0.3  # an appearance of two actors at once
_STOP_CHANCE = 0.3
_MIN_HEIGHT = 40


def _crossing(rng: random.Random, id: str, start: float, width: int, height: int) -> Actor:
    """One actor crossing the frame from a side edge to the other, maybe stopping on the way."""
    cutout = rng.choices([k for k, _ in _KINDS], weights=[w for _, w in _KINDS])[0]
    label = CUTOUTS[cutout].label
    _, alpha = cutout_pixels(cutout)
    aspect = alpha.shape[1] / alpha.shape[0]
    top_h = min(height / 2, CUTOUTS[cutout].max_height, width / (2 * aspect))
    h0 = math.exp(rng.uniform(math.log(_MIN_HEIGHT), math.log(max(top_h, _MIN_HEIGHT + 1))))
    # Nearer things are bigger and lower in the frame: the feet line follows the size.
    y0 = min(height, max(h0 + 2, height * (0.55 + 0.45 * (h0 - _MIN_HEIGHT) / max(1.0, top_h - _MIN_HEIGHT))))
    drift = rng.uniform(-0.15, 0.15)  # walking a little towards or away from the camera
    h1 = h0 * (1 + drift)
    y1 = min(height, max(h1 + 2, y0 + drift * height * 0.3))
    leftwards = rng.random() < 0.5
    w0, w1 = h0 * aspect, h1 * aspect
    x_in = width + w0 / 2 + 1 if leftwards else -w0 / 2 - 1
    x_out = -w1 / 2 - 1 if leftwards else width + w1 / 2 + 1
    speed = rng.uniform(*_SPEED[label]) * ((h0 + h1) / 2) / _METRES[cutout]  # px/s
    duration = abs(x_out - x_in) / speed
    path = [Waypoint(start, x_in, y0, h0)]
    if rng.random() < _STOP_CHANCE:
        f = rng.uniform(0.25, 0.75)
        stop_at = Waypoint(
            start + f * duration, x_in + f * (x_out - x_in), y0 + f * (y1 - y0), h0 + f * (h1 - h0)
        )
        pause = rng.uniform(*_STOP[label])
        path += [stop_at, Waypoint(stop_at.t + pause, stop_at.x, stop_at.y, stop_at.h)]
        start += pause
    path.append(Waypoint(start + duration, x_out, y1, h1))
    return Actor(
        id, cutout, tuple(Waypoint(round(w.t, 2), round(w.x, 1), round(w.y, 1), round(w.h, 1)) for w in path)
    )


def make_script(
    seed: int,
    seconds: float,
    width: int = 1280,
    height: int = 720,
    background: str | None = None,
    busy: float = 0.2,
) -> Script:
    """A camera's day, deterministic for a seed: appearances of one actor (sometimes two at once)
    separated by long empty stretches, so that something is in view about `busy` of the time."""
    rng = random.Random(seed)
    background = background or rng.choice(sorted(BACKGROUNDS))
    actors: list[Actor] = []
    t = rng.uniform(0, 20)
    while True:
        first = _crossing(rng, f"a{len(actors) + 1:04d}", t, width, height)
        group = [first]
        if rng.random() < _PAIR_CHANCE:
            lag = rng.uniform(0, 0.6 * (first.end - first.start))
            group.append(_crossing(rng, f"a{len(actors) + 2:04d}", t + lag, width, height))
        end = max(a.end for a in group)
        if end > seconds:
            break
        actors += group
        span = end - t
        # Gaps exponential around the mean that makes the in-view share `busy`, kept at 5 s or more.
        t = end + max(5.0, rng.expovariate(busy / ((1 - busy) * span)))
    return Script(background, width, height, float(seconds), tuple(actors))


# -- hand-written scripts for the demo -------------------------------------------------------------


def _walk(id: str, cutout: str, *points: tuple[float, float, float, float]) -> Actor:
    return Actor(id, cutout, tuple(Waypoint(*p) for p in points))


# The demo records 6 segments of 20 s at 640x360 from one segment before the demo window
# (spec.demo_window): its window is t = 20..100 s of these scripts. Every script has people
# and a vehicle entering and leaving inside the window, with empty stretches between them.
DEMO_SCRIPTS: dict[str, Script] = {
    "demo-pasture": Script(
        "pasture",
        640,
        360,
        120.0,
        (
            _walk(
                "p1",
                "fireman-a",
                (24, -60, 330, 150),
                (34, 260, 330, 150),
                (40, 260, 330, 150),
                (52, 700, 330, 150),
            ),
            _walk("c1", "sedan", (62, 720, 300, 60), (68, -90, 300, 60)),
            _walk("p2", "fireman-b", (76, 690, 250, 60), (98, -40, 250, 60)),
        ),
    ),
    "demo-cliff": Script(
        "cliff",
        640,
        360,
        120.0,
        (
            _walk("t1", "pickup", (26, -130, 350, 110), (32, 770, 350, 110)),
            _walk(
                "p1",
                "fireman-b",
                (44, 700, 345, 170),
                (56, 320, 345, 170),
                (62, 320, 345, 170),
                (76, -60, 345, 170),
            ),
            _walk("p2", "fireman-a", (50, -30, 300, 90), (74, 680, 300, 90)),
        ),
    ),
    "demo-launch-pad": Script(
        "launch-pad",
        640,
        360,
        120.0,
        (
            _walk(
                "b1",
                "bus",
                (24, 780, 355, 130),
                (34, 300, 355, 130),
                (44, 300, 355, 130),
                (52, -200, 355, 130),
            ),
            _walk("p1", "fireman-a", (60, -40, 340, 120), (84, 690, 330, 110)),
            _walk("c1", "convertible", (88, -100, 300, 50), (93, 740, 300, 50)),
        ),
    ),
}


def resolve(script: str, seed: int, seconds: float, width: int, height: int) -> Script:
    """The script a channel names: a JSON file (`*.json`), a demo script's name, or `generated`
    / `generated:<background>` for make_script(seed, seconds) at the recording's size."""
    if script.endswith(".json"):
        return load_script(script)
    if script in DEMO_SCRIPTS:
        return DEMO_SCRIPTS[script]
    kind, _, background = script.partition(":")
    if kind == GENERATED:
        return make_script(seed, seconds, width, height, background or None)
    raise ValueError(
        f"unknown script {script!r}: a .json file, {GENERATED}[:<background>] or one of {sorted(DEMO_SCRIPTS)}"
    )
