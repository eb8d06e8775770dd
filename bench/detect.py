"""Detect benchmark: people and vehicles found in scripted footage, scored against the script, and
what finding them costs.

`python -m bench.detect` (or `make bench-detect`) serves the stack's detector (NanoDet, COCO-80,
`stack.detector_build`) with the stack's model server and runs, on an hour of footage: four
channels x 15 minutes of 1280x720 H.264 at 10 fps with a key frame every 2 s (a recorder's
defaults), each a scripted scene (`stack.simulator.scenes.make_script`, fixed seeds, one
background each) in which one actor or two at once cross the frame now and then, some of them
stopping on the way, at heights from 40 px to half the frame, and nothing moves in between
(something is in view about a fifth of the time). Clips are made once and cached under
`cache_dir()/footage/`. Three ways of detecting, one channel after another, timed and scored:
  regions  `video.detect.detect_video` as the pipeline runs it (the default settings): frames
           sampled at 1 frame/s, decoded once; the detector looks at squares around motion and
           around followed objects, and at the whole frame every `full_look_s`;
  whole    the same with `DetectSettings(regions=False)`: every sampled frame, whole;
  seeds    the seeds' way: each video's 1 frame/s pictures saved as JPEG first (ffmpeg), then
           one at a time, synchronously: read, decode and resize to the model's 416 x 416
           (TensorFlow ops, as `bench.classify.seeds_pictures`), one Predict, wait; its boxes
           joined into objects by the same tracker.
Cost: detector calls and images sent per hour of video, realtime factor (video seconds over
wall seconds) and CPU seconds (this process, decoding included, plus the model server's). Peak
memory: the high-water mark (wait4's ru_maxrss, `bench.common.run_measured`) of a process that
runs only `detect_video` (regions) on one 15-minute channel, as a pipeline flow run would.
The seeds' way is timed on the first channel only (its cost is per frame, whatever the scene).
The regions way is then checked on a second set of seeds (whole frames too with `--ways ...,check-whole`),
so that the settings are not fitted to one set of scenes.

How objects are scored against the script (`scenes.truth`: each actor's first and last instant
with half of it in view, and its box at every whole second):
- Classes: person; vehicle = car, truck or bus (the detector calls the same pickup a car in one
  frame and a truck in the next, and the script's classes are the cut-outs' own: a detected
  vehicle of the wrong one of the three is still a vehicle found). Other labels are their own
  class and match nothing.
- A detected object and a true object of one class match when their time spans overlap (within
  1 s, the sampling step) and their boxes overlap (IoU >= `MATCH_IOU`) at the instants both are
  known: the detected object keeps its best box (at its best instant) and its last box (at its
  end); each must overlap the true object's box then (its drawn rectangle clipped to the frame,
  also when less than half of it is in view), and it must be in the frame at one of them at least. Each true object is matched to at most one detected object and
  the reverse (the assignment maximises the overlap, Hungarian).
- Recall: true objects matched / true objects. Precision: detected objects matched / detected
  objects; a visit the tracker broke into fragments counts one match and the other fragments
  as false positives (reported apart, as fragments: unmatched objects whose boxes would match
  an already matched true object).
- Start and end error: |detected start - first visible instant| and |detected end - last
  visible instant| of each matched pair, in seconds (median and max).

Rows go to `bench/results/detect.json` (format in `bench.common`) and are printed;
`bench/RESULTS.md` gets every bench's latest table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import print_table, row, run_measured, write_results
from bench.results_page import write_page

WIDTH, HEIGHT, FPS, GOP_S = 1280, 720, 10, 2
SECONDS = 900
BACKGROUNDS = ("pasture", "cliff", "launch-pad", "pasture")
SEEDS = (100, 101, 102, 103)
CHECK_SEEDS = (200, 201, 202, 203)
START = datetime(2026, 11, 1, 8, 0, 0, tzinfo=UTC)
MATCH_IOU = 0.2
SPAN_SLACK_S = 1.0
VEHICLES = frozenset({"car", "truck", "bus"})
BASELINE_WHOLE = "the detector on every sampled frame, whole (regions=False)"
BASELINE_SEEDS = "the seeds' way: JPEG pictures first, then one synchronous Predict per 416x416 frame"
TARGET_RECALL = TARGET_PRECISION = 0.95
TARGET_ERROR_S = 2.0
TARGET_REALTIME = 50.0
TARGET_FEWER_CALLS = 5.0


def object_class(label: str) -> str:
    return "vehicle" if label in VEHICLES else label


# -- footage and truth -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    seed: int
    background: str
    seconds: int
    script: Any  # stack.simulator.scenes.Script
    clip: Path
    truth: list[dict]


def channels(seeds: Sequence[int], seconds: int = SECONDS) -> list[Channel]:
    """Each seed's scripted channel: its clip (made once, cached) and its truth."""
    from stack.simulator.scene_footage import ensure_scene_clip
    from stack.simulator.scenes import make_script, truth

    made = []
    for i, seed in enumerate(seeds):
        background = BACKGROUNDS[i % len(BACKGROUNDS)]
        script = make_script(seed, seconds, WIDTH, HEIGHT, background)
        started = time.perf_counter()
        clip = ensure_scene_clip(script, 0, seconds, "h264", "none", WIDTH, HEIGHT, FPS, GOP_S)
        if time.perf_counter() - started > 5:
            print(f"  made {clip.name} in {time.perf_counter() - started:.0f} s", flush=True)
        made.append(
            Channel(seed, background, seconds, script, clip, truth(script, START, FPS, WIDTH, HEIGHT))
        )
    return made


# -- objects and their scores ------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A detected object, in seconds from the recording's start."""

    label: str
    start: float
    end: float
    best_time: float
    best_box: tuple[float, float, float, float]
    last_box: tuple[float, float, float, float]

    @property
    def kind(self) -> str:
        return object_class(self.label)


@dataclass(frozen=True)
class Truth:
    id: str
    kind: str
    size: float  # its largest box height, px
    first: float
    last: float
    actor: Any  # stack.simulator.scenes.Actor

    def box_at(self, t: float) -> tuple[float, float, float, float] | None:
        """Its drawn rectangle at t, clipped to the frame (also when less than half of it is in view)."""
        from stack.simulator.scenes import place

        p = place(self.actor, t)
        if p is None:
            return None
        x0, y0 = max(p.left, 0), max(p.top, 0)
        x1, y1 = min(p.left + p.width, WIDTH), min(p.top + p.height, HEIGHT)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def truths(channel: Channel) -> list[Truth]:
    def seconds(iso: str) -> float:
        return (datetime.fromisoformat(iso) - START).total_seconds()

    actors = {a.id: a for a in channel.script.actors}
    return [
        Truth(
            o["id"],
            object_class(o["label"]),
            max(b["box"][3] - b["box"][1] for b in o["boxes"]) if o["boxes"] else 0.0,
            seconds(o["first_visible_utc"]),
            seconds(o["last_visible_utc"]),
            actors[o["id"]],
        )
        for o in channel.truth
    ]


def found_objects(objects: list[Any]) -> list[Found]:
    """`video.tracking.TrackedObject`s as `Found`."""

    def s(at: datetime) -> float:
        return (at - START).total_seconds()

    return [Found(o.label, s(o.start), s(o.end), s(o.best_time), o.best_box, o.last_box) for o in objects]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    from video.regions import iou

    return iou(a, b)


def overlap(found: Found, truth: Truth) -> float | None:
    """The mean IoU at the instants both boxes are known, or None when they do not match."""
    if found.kind != truth.kind:
        return None
    if found.start > truth.last + SPAN_SLACK_S or found.end < truth.first - SPAN_SLACK_S:
        return None
    shared = [
        (truth.box_at(at), box)
        for at, box in ((found.best_time, found.best_box), (found.end, found.last_box))
    ]
    ious = [_iou(t, f) for t, f in shared if t is not None]
    if not ious or min(ious) < MATCH_IOU:
        return None
    return sum(ious) / len(ious)


@dataclass
class Score:
    """Matches of one channel or of several added up."""

    truths: dict[str, int] = field(default_factory=dict)  # per class
    found: dict[str, int] = field(default_factory=dict)
    matched: dict[str, int] = field(default_factory=dict)
    fragments: int = 0
    start_errors: list[float] = field(default_factory=list)
    end_errors: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # "seed/id class size"
    false: list[str] = field(default_factory=list)  # "seed label start-end"

    def add(self, other: Score) -> None:
        for mine, theirs in (
            (self.truths, other.truths),
            (self.found, other.found),
            (self.matched, other.matched),
        ):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        self.fragments += other.fragments
        self.start_errors += other.start_errors
        self.end_errors += other.end_errors
        self.missed += other.missed
        self.false += other.false

    def recall(self, kind: str) -> float:
        return self.matched.get(kind, 0) / self.truths[kind] if self.truths.get(kind) else 1.0

    def precision(self, kind: str) -> float:
        return self.matched.get(kind, 0) / self.found[kind] if self.found.get(kind) else 1.0


def score(seed: int, found: list[Found], true: list[Truth]) -> Score:
    """One channel's detected objects against its truth (the rule in this module's docstring)."""
    from scipy.optimize import linear_sum_assignment

    result = Score()
    for t in true:
        result.truths[t.kind] = result.truths.get(t.kind, 0) + 1
    for f in found:
        result.found[f.kind] = result.found.get(f.kind, 0) + 1
    overlaps = np.zeros((len(found), len(true)))
    for i, f in enumerate(found):
        for j, t in enumerate(true):
            overlaps[i, j] = overlap(f, t) or 0.0
    pairs: list[tuple[int, int]] = []
    if found and true:
        rows, cols = linear_sum_assignment(-overlaps)
        pairs = [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if overlaps[i, j] > 0]
    matched_found = {i for i, _ in pairs}
    matched_true = {j for _, j in pairs}
    for i, j in pairs:
        f, t = found[i], true[j]
        result.matched[t.kind] = result.matched.get(t.kind, 0) + 1
        result.start_errors.append(abs(f.start - t.first))
        result.end_errors.append(abs(f.end - t.last))
    for j, t in enumerate(true):
        if j not in matched_true:
            result.missed.append(f"{seed}/{t.id} {t.kind} {t.size:.0f}px {t.first:.0f}-{t.last:.0f}s")
    for i, f in enumerate(found):
        if i not in matched_found:
            fragment = any(overlaps[i, j] > 0 for j in matched_true)
            result.fragments += fragment
            result.false.append(
                f"{seed} {f.label} {f.start:.0f}-{f.end:.0f}s{' (fragment)' if fragment else ''}"
            )
    return result


# -- the three ways ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    """One way over a set of channels: what it found and what it cost."""

    name: str
    video_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process
    server_cpu_s: float = 0.0
    frames: int = 0
    motion_frames: int = 0
    calls: int = 0
    crops: int = 0
    score: Score = field(default_factory=Score)

    @property
    def realtime(self) -> float:
        return self.video_s / self.wall_s

    def per_hour(self, count: int) -> float:
        return count * 3600 / self.video_s


def timed(
    name: str,
    chans: list[Channel],
    server_pid: int,
    one: Callable[[Channel], tuple[list[Found], dict[str, int]]],
) -> Run:
    run = Run(name)
    for channel in chans:
        cpu, server, started = own_cpu_seconds(), cpu_seconds(server_pid), time.perf_counter()
        found, counts = one(channel)
        run.wall_s += time.perf_counter() - started
        run.cpu_s += own_cpu_seconds() - cpu
        run.server_cpu_s += cpu_seconds(server_pid) - server
        run.video_s += channel.seconds
        run.frames += counts["frames"]
        run.motion_frames += counts.get("motion_frames", 0)
        run.calls += counts["calls"]
        run.crops += counts["crops"]
        run.score.add(score(channel.seed, found, truths(channel)))
    s = run.score
    print(
        f"  {name:8s} {run.realtime:6.1f}x realtime, {run.cpu_s + run.server_cpu_s:6.0f} CPU s, "
        f"{run.per_hour(run.calls):6.0f} calls/h, {run.per_hour(run.crops):6.0f} crops/h; "
        f"person recall {s.recall('person'):.3f} precision {s.precision('person'):.3f}, "
        f"vehicle recall {s.recall('vehicle'):.3f} precision {s.precision('vehicle'):.3f}, "
        f"start error median {_median(s.start_errors):.1f} max {max(s.start_errors, default=0):.1f} s, "
        f"end error median {_median(s.end_errors):.1f} max {max(s.end_errors, default=0):.1f} s",
        flush=True,
    )
    for line in s.missed:
        print(f"    missed {line}", flush=True)
    for line in s.false:
        print(f"    false  {line}", flush=True)
    return run


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def detect_way(client: Any, settings: Any) -> Callable[[Channel], tuple[list[Found], dict[str, int]]]:
    from video.detect import detect_video

    def one(channel: Channel) -> tuple[list[Found], dict[str, int]]:
        result = detect_video(channel.clip, START, client, settings)
        counts = {
            "frames": result.frames,
            "motion_frames": result.motion_frames,
            "calls": result.detector_calls,
            "crops": result.crops,
        }
        return found_objects(result.objects), counts

    return one


def seeds_pictures(video: Path, client: Any, size: int, folder: Path) -> Iterator[list[Any]]:
    """The seeds' way with a detector, for one video: its 1 frame/s JPEG pictures first (ffmpeg, into
    `folder`), then one at a time, synchronously: read, decode and resize to the model's `size` x
    `size` (TensorFlow ops, as `bench.classify.seeds_pictures`), one Predict, wait. Yields each
    picture's boxes: (label, score, (x0, y0, x1, y1) as shares of the picture)."""
    import tensorflow as tf

    from video.probe import input_options

    subprocess.run(  # noqa: S603 - fixed argument list
        ["ffmpeg", "-nostdin", "-loglevel", "error", *input_options(video), "-i", str(video),
         "-an", "-vf", "fps=fps=1:round=up", "-q:v", "2", str(folder / "%06d.jpg")],
        check=True, timeout=1800,
    )  # fmt: skip
    for n, picture in enumerate(sorted(folder.iterdir())):
        image = tf.io.decode_jpeg(tf.io.read_file(str(picture)), channels=3)
        frame = tf.cast(tf.image.resize(image, (size, size), method="area"), tf.uint8).numpy()
        _, [found] = next(iter(client.detect_batches([(n, frame[None])])))
        yield found


def seeds_way(client: Any, size: int) -> Callable[[Channel], tuple[list[Found], dict[str, int]]]:
    """JPEG pictures first, then one synchronous Predict per picture; the boxes tracked as ours are."""
    from video.tracking import FrameBox, Tracker

    def one(channel: Channel) -> tuple[list[Found], dict[str, int]]:
        folder = Path(tempfile.mkdtemp(prefix="nvrflow-bench-"))
        tracker = Tracker(start_score=client.score_threshold)
        objects: list[Any] = []
        frames = 0
        try:
            for n, found in enumerate(seeds_pictures(channel.clip, client, size, folder)):
                boxes = [
                    FrameBox(label, s, (x0 * WIDTH, y0 * HEIGHT, x1 * WIDTH, y1 * HEIGHT))
                    for label, s, (x0, y0, x1, y1) in found
                ]
                objects += tracker.update(START + timedelta(seconds=n), boxes)
                frames += 1
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        objects += tracker.finish()
        return found_objects(objects), {"frames": frames, "calls": frames, "crops": frames}

    return one


# -- peak memory: detect_video alone in a process of its own -----------------------------------------


def one_segment(clip: Path, target: str, base: Path) -> int:
    """`--segment`: detect_video (regions) on one clip, as a flow run's task would; prints its counts."""
    client_block = detector_block(target, base)
    from video.detect import detect_video

    with client_block.connect() as client:
        client.check_metadata()
        result = detect_video(clip, START, client)
    print(
        json.dumps({"frames": result.frames, "calls": result.detector_calls, "objects": len(result.objects)})
    )
    return 0


def detector_block(target: str, base: Path, **settings: Any) -> Any:
    from blocks.model_server import TFServingModel
    from stack import detector_build
    from stack.model_build import read_labels

    return TFServingModel(
        target=target,
        model_name=detector_build.MODEL_NAME,
        kind="detector",
        input_size=detector_build.IMAGE_SIZE,
        labels=read_labels(base),
        **settings,
    )


# -- rows ----------------------------------------------------------------------------------------------


def _rows(
    regions: Run, whole: Run, seeds: Run, check: tuple[Run, Run | None] | None, peak_mb: float
) -> list[dict]:
    hours = f"{regions.video_s / 3600:g} h of 1280x720 H.264 at 1 frame/s"
    rows = []
    for run, baseline, name in ((regions, whole, BASELINE_WHOLE),):
        for kind in ("person", "vehicle"):
            rows.append(row(f"{kind} objects: recall, motion regions vs every frame whole ({hours})", "share",
                            run.score.recall(kind), baseline.score.recall(kind), name))  # fmt: skip
            rows.append(row(f"{kind} objects: precision, motion regions vs every frame whole", "share",
                            run.score.precision(kind), baseline.score.precision(kind), name))  # fmt: skip
        s, b = run.score, baseline.score
        rows.append(row("start error, median (lower is better)", "s", _median(s.start_errors),
                        _median(b.start_errors), name))  # fmt: skip
        rows.append(row("start error, max (lower is better)", "s", max(s.start_errors, default=0),
                        max(b.start_errors, default=0), name))  # fmt: skip
        rows.append(row("end error, median (lower is better)", "s", _median(s.end_errors),
                        _median(b.end_errors), name))  # fmt: skip
        rows.append(row("end error, max (lower is better)", "s", max(s.end_errors, default=0),
                        max(b.end_errors, default=0), name))  # fmt: skip
        rows.append(row("fragments among the false positives (lower is better)", "objects", s.fragments,
                        b.fragments, name))  # fmt: skip
    for kind in ("person", "vehicle"):
        rows.append(row(f"{kind} objects: recall, motion regions vs the seeds' way", "share",
                        regions.score.recall(kind), seeds.score.recall(kind), BASELINE_SEEDS))  # fmt: skip
    for run_b, name in ((whole, BASELINE_WHOLE), (seeds, BASELINE_SEEDS)):
        rows.append(row("detector calls per hour of video (lower is better)", "calls/h",
                        regions.per_hour(regions.calls), run_b.per_hour(run_b.calls), name))  # fmt: skip
        rows.append(row("images sent to the detector per hour of video (lower is better)", "images/h",
                        regions.per_hour(regions.crops), run_b.per_hour(run_b.crops), name))  # fmt: skip
        rows.append(row("realtime factor (video s / wall s)", "x realtime", regions.realtime, run_b.realtime,
                        name))  # fmt: skip
        rows.append(row("CPU seconds per hour of video, this process + model server (lower is better)", "s",
                        regions.per_hour(regions.cpu_s + regions.server_cpu_s),  # type: ignore[arg-type]
                        run_b.per_hour(run_b.cpu_s + run_b.server_cpu_s), name))  # type: ignore[arg-type]  # fmt: skip
    rows.append(row("peak RSS of a process running detect_video (motion regions) on one 15-min channel",
                    "MB", peak_mb, 300.0, "the target: a whole pipeline flow run <= 300 MB"))  # fmt: skip
    if check is not None:
        c = check[0]
        first = f"the first seed set {SEEDS}, same settings"
        for kind in ("person", "vehicle"):
            rows.append(row(f"second seed set {CHECK_SEEDS}: {kind} objects, recall, motion regions", "share",
                            c.score.recall(kind), regions.score.recall(kind), first))  # fmt: skip
            rows.append(row(f"second seed set: {kind} objects, precision, motion regions", "share",
                            c.score.precision(kind), regions.score.precision(kind), first))  # fmt: skip
        cs, s = c.score, regions.score
        for what, mine, theirs in (
            ("start", cs.start_errors, s.start_errors),
            ("end", cs.end_errors, s.end_errors),
        ):
            rows.append(row(f"second seed set: {what} error, median (lower is better)", "s", _median(mine),
                            _median(theirs), first))  # fmt: skip
            rows.append(row(f"second seed set: {what} error, max (lower is better)", "s", max(mine, default=0),
                            max(theirs, default=0), first))  # fmt: skip
        rows.append(row("second seed set: realtime factor, motion regions", "x realtime", c.realtime,
                        regions.realtime, first))  # fmt: skip
        rows.append(row("second seed set: detector calls per hour, motion regions (lower is better)", "calls/h",
                        c.per_hour(c.calls), regions.per_hour(regions.calls), first))  # fmt: skip
    return rows


def verdicts(regions: Run, whole: Run | None) -> Iterator[str]:
    s = regions.score
    for kind in ("person", "vehicle"):
        ok = s.recall(kind) >= TARGET_RECALL and s.precision(kind) >= TARGET_PRECISION
        yield (f"{kind} recall and precision >= {TARGET_RECALL}: {'met' if ok else 'NOT met'} "
               f"({s.recall(kind):.3f}, {s.precision(kind):.3f})")  # fmt: skip
    worst = max([*s.start_errors, *s.end_errors], default=0.0)
    yield f"start and end within {TARGET_ERROR_S:g} s: {'met' if worst <= TARGET_ERROR_S else 'NOT met'} (max {worst:.1f} s)"
    yield (f"motion regions >= {TARGET_REALTIME:g}x realtime: {'met' if regions.realtime >= TARGET_REALTIME else 'NOT met'}"
           f" ({regions.realtime:.1f}x)")  # fmt: skip
    if whole is None:
        return
    fewer = whole.per_hour(whole.calls) / max(regions.per_hour(regions.calls), 1)
    no_loss = all(s.recall(k) >= whole.score.recall(k) for k in ("person", "vehicle"))
    yield (f">= {TARGET_FEWER_CALLS:g}x fewer detector calls than every frame whole, no loss of recall: "
           f"{'met' if fewer >= TARGET_FEWER_CALLS and no_loss else 'NOT met'} ({fewer:.1f}x, "
           f"recall {'kept' if no_loss else 'lost'})")  # fmt: skip


def detect_settings(values: dict[str, Any]) -> Any:
    """DetectSettings from JSON: its fields, `motion` and `tracking` as objects of their own fields."""
    from video.detect import DetectSettings
    from video.motion import MotionSettings
    from video.tracking import TrackingSettings

    motion = MotionSettings(**values.pop("motion", {}))
    tracking = TrackingSettings(**values.pop("tracking", {}))
    return DetectSettings(motion=motion, tracking=tracking, **values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="one channel per seed")
    parser.add_argument("--check-seeds", default=",".join(map(str, CHECK_SEEDS)), help="empty: no second set")
    parser.add_argument("--seconds", type=int, default=SECONDS, help="of each channel")
    parser.add_argument(
        "--ways", default="regions,whole,seeds,memory", help="of regions, whole, seeds, memory"
    )
    parser.add_argument(
        "--settings",
        default="{}",
        help='DetectSettings of the regions way as JSON, e.g. {"region_min_side": 128, "tracking": {"min_frames": 3}}',
    )
    parser.add_argument(
        "--block", default="{}", help='detector block settings as JSON, e.g. {"score_threshold": 0.3}'
    )
    parser.add_argument("--segment", type=Path, help=argparse.SUPPRESS)  # the peak-memory child
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from stack import detector_build

    base = detector_build.ensure_model()
    if args.segment is not None:
        return one_segment(args.segment, args.target, base)

    from blocks.model_server import TFServingModel
    from stack.tiny_model import serve
    from video.detect import DetectSettings

    settings = detect_settings(json.loads(args.settings))
    block_settings = json.loads(args.block)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    check_seeds = [int(s) for s in args.check_seeds.split(",") if s]
    ways = set(args.ways.split(","))
    main_set = channels(seeds, args.seconds)
    check_set = channels(check_seeds, args.seconds) if check_seeds else []
    batch = int(TFServingModel.model_fields["batch_size"].default)
    print(f"detect benchmark: {len(main_set)} channels x {args.seconds} s (seeds {seeds}), check seeds {check_seeds}",
          flush=True)  # fmt: skip
    runs: dict[str, Run] = {}
    with serve(base, detector_build.MODEL_NAME, max_batch=batch, timeout=300) as served:
        pid = served.process.pid
        with detector_block(served.target, base, **block_settings).connect() as client:
            client.check_metadata()
            if "regions" in ways:
                runs["regions"] = timed("regions", main_set, pid, detect_way(client, settings))
            if "whole" in ways:
                runs["whole"] = timed(
                    "whole", main_set, pid, detect_way(client, DetectSettings(regions=False))
                )
            if "seeds" in ways:  # its cost is per frame, whatever the scene: one channel tells it
                seeds_block = detector_block(served.target, base, **{**block_settings, "batch_size": 1})
                with seeds_block.connect() as one:
                    runs["seeds"] = timed("seeds", main_set[:1], pid, seeds_way(one, seeds_block.input_size))
            if check_set and "regions" in ways:
                runs["check regions"] = timed("regions", check_set, pid, detect_way(client, settings))
            if check_set and "check-whole" in ways:
                runs["check whole"] = timed(
                    "whole", check_set, pid, detect_way(client, DetectSettings(regions=False))
                )
        peak = 0.0
        if "memory" in ways:
            measured = run_measured(
                [sys.executable, "-m", "bench.detect", "--segment", str(main_set[0].clip), "--target",
                 served.target],
                timeout=1200,
                cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip
            if measured.returncode != 0:
                raise RuntimeError(f"the peak-memory run failed: {measured.stderr[-2000:]}")
            peak = measured.max_rss_mb
            print(
                f"  peak RSS of detect_video on one channel: {peak:.0f} MB ({measured.stdout.strip()})",
                flush=True,
            )

    if not {"regions", "whole", "seeds", "memory"} <= ways:
        return 0
    check = (runs["check regions"], runs.get("check whole")) if check_set else None
    rows = _rows(runs["regions"], runs["whole"], runs["seeds"], check, peak)
    path = write_results("detect", rows)
    write_page()
    print_table(rows)
    for line in verdicts(runs["regions"], runs["whole"]):
        print(line)
    if check is not None:
        print("second seed set:")
        for line in verdicts(*check):
            print(f"  {line}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
