"""Classify benchmark: frames per second through nvrflow's classify stage, batched vs one per frame.

`python -m bench.classify` (or `make bench-classify`) serves the real EfficientNet-Lite0
(`stack.model_build.ensure_model()`) with the stack's model server and measures, in one run:
  stage      `video.classify.classify_video(mp4, start, client, batch=B)` for each
             batch size B: ffmpeg decode + resize, gRPC Predict, model, top-k; frames/s is the
             number of frames classified over the call's wall time;
  seeds      one request per frame, the seeds' way: the sampled frames are first saved as
             JPEG pictures (ffmpeg), then taken one at a time, synchronously: read, decode and
             resize (TensorFlow ops), one Predict, wait for the answer, next picture; same
             model server, same model, same gRPC client;
  limit      the SavedModel loaded in this process with tf.saved_model.load, its serving
             signature called on ready uint8 batches of the same frames (at least 256 of them,
             cycled): no decoding, no gRPC;
  served     the same ready batches sent through nvrflow's client to the model server: gRPC
             and the server, no decoding. Next to `limit` it shows what the stage loses to
             gRPC, and next to `stage` what it loses to decoding on the same cores.
Key-frame screening (`key_frames=True`: only the key frames decoded and classified) is timed
at the block's default batch size in every repetition too, in video seconds per second, next
to 1 frame a second. So is the stage on the recorder's sub-stream (`classify_from="sub"`) at
every batch size: the same scene recorded at 640x360 beside the 720p main stream, read as
the pipeline reads it (the export as downloaded), at 1 frame a second.
The stage at batch_size=1 is reported too: one Predict per frame, but with nvrflow's streamed
decoding ahead of the model, which shows what batching alone adds.
The video is one 10-minute segment, as in `make bench`: the 1280x720 25 fps H.264 camera clip
(cached, remuxed to MP4 once under `cache_dir()/bench/`), sampled at 1 frame a second as the
pipeline does; a run only counts if at least 80 % of its frames get one of the scene's
expected ImageNet labels as top-1. Every repetition runs every batch size of the stage and of
the in-process model, in a rotating order, so that other load on the machine falls on all of
them alike; medians are reported.

The batch size it recommends is the smallest one within 5 % of the fastest median on both
streams; it says whether that is the block's default.
Rows go to `bench/results/classify.json` (format in `bench.common`) and are printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.common import print_table, row, write_results
from bench.results_page import write_page
from stack.paths import cache_dir

NEAR_BEST = 0.95
SEGMENT_SECONDS = 600  # one segment of `make bench`
SUB_STREAM_SIZE = (640, 360)  # a Hikvision sub-stream's usual size for a 16:9 camera
IN_PROCESS_FRAMES = 256  # the limit is timed over at least this many frames: a few seconds
BASELINE_SEEDS = "the seeds' way: JPEG pictures first, then one synchronous Predict per picture"
BASELINE_ONE = "nvrflow's stage at batch_size=1 (one Predict per frame, decoding streamed ahead)"


def bench_video(seconds: int, scene: str) -> Path:
    """The camera clip as the transcode stage leaves it: an MP4 (cached)."""
    from stack.simulator.footage import ensure_clip
    from video.transcode import TranscodeOptions, transcode_file

    clip = ensure_clip(scene, "h264", "g711u", seconds, 1280, 720, 25)
    mp4 = cache_dir() / "bench" / "classify" / f"{clip.stem}.mp4"
    transcode_file(clip, mp4, TranscodeOptions())  # a verified existing MP4 is kept
    return mp4


class InProcessModel:
    """The SavedModel's serving signature in this process, fed ready uint8 batches."""

    def __init__(self, base_path: Path, frames) -> None:
        import numpy as np
        import tensorflow as tf

        self.tf = tf
        versions = sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit())
        self.loaded = tf.saved_model.load(str(base_path / str(versions[-1])))
        self.function = self.loaded.signatures["serving_default"]
        self.frames = np.ascontiguousarray(frames)

    def fps(self, batch: int, count: int) -> float:
        tf = self.tf
        batches = [
            tf.constant(self.frames[i % len(self.frames) : i % len(self.frames) + batch])
            for i in range(0, count, batch)
        ]
        self.function(images=batches[0])  # the first call at a new shape pays for set-up
        started = time.perf_counter()
        done = 0
        for images in batches:
            self.function(images=images)["probabilities"].numpy()
            done += int(images.shape[0])
        return done / (time.perf_counter() - started)


def served_fps(model, frames, batch: int, count: int, expected: tuple[str, ...]) -> float:
    """Ready uint8 batches of the frames (cycled) through the client as the stage sends them
    (`classify_batches`): gRPC and the server only."""
    top1: list[str] = []
    batches = [(i, frames[i % len(frames) : i % len(frames) + batch]) for i in range(0, count, batch)]
    with model.connect() as client:
        client.classify(frames[:batch])  # the first call at a new shape pays for set-up
        started = time.perf_counter()
        for _i, tops in client.classify_batches(batches):
            top1 += [top[0][0] for top in tops]
        seconds = time.perf_counter() - started
    _check_labels(top1, expected, "the model over gRPC")
    return len(top1) / seconds


def stage_fps(
    video: Path, model, sample_fps: float, expected: tuple[str, ...], key_frames: bool = False
) -> tuple[float, int]:
    """Frames per second through the stage, and how many frames (time from the video to the last label)."""
    from video.classify import classify_video

    start = datetime(2026, 11, 1, tzinfo=UTC)
    started = time.perf_counter()
    with model.connect() as client:
        frames, detections = classify_video(
            video, start, client, model.input_size, model.batch_size, sample_fps, key_frames
        )
    seconds = time.perf_counter() - started
    _check_labels([d.label for d in detections if d.rank == 1], expected, "the classify stage")
    return frames / seconds, frames


def _check_labels(top1: list[str], expected: tuple[str, ...], who: str) -> None:
    right = sum(label in expected for label in top1)
    if not top1 or right < 0.8 * len(top1):
        raise RuntimeError(f"{who} got {right} of {len(top1)} frames right: {sorted(set(top1))}")


def seeds_pictures(video: Path, client, size: int, sample_fps: float, folder: Path) -> Iterator[list]:
    """The seeds' way for one video: its JPEG pictures first (ffmpeg, into `folder`), then one at a
    time, synchronously: read, decode and resize (TensorFlow ops), one Predict; top-k of each."""
    import tensorflow as tf

    subprocess.run(  # noqa: S603
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-an",
         "-vf", f"fps=fps={sample_fps}:round=up", "-q:v", "2", str(folder / "%06d.jpg")],
        check=True, timeout=600,
    )  # fmt: skip
    for picture in sorted(folder.iterdir()):
        image = tf.io.decode_jpeg(tf.io.read_file(str(picture)), channels=3)
        frame = tf.cast(tf.image.resize(image, (size, size), method="area"), tf.uint8)
        yield client.classify(frame.numpy()[None])[0]


def seeds_fps(video: Path, model, sample_fps: float, expected: tuple[str, ...]) -> tuple[float, int]:
    """The seeds' way, timed from the video to the last answer: pictures first, then one by one."""
    folder = Path(tempfile.mkdtemp(prefix="nvrflow-bench-"))
    try:
        started = time.perf_counter()
        with model.connect() as client:
            top1 = [top[0][0] for top in seeds_pictures(video, client, model.input_size, sample_fps, folder)]
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _check_labels(top1, expected, "the seeds' way")
    return len(top1) / seconds, len(top1)


def sub_stream_video(seconds: int, scene: str) -> Path:
    """The same camera's sub-stream as a recorder keeps it (cached): 640x360, as the export arrives."""
    from stack.simulator.footage import ensure_clip

    if seconds % 60 == 0:  # a minute's pictures looped: the same footage, made in seconds
        return ensure_clip(scene, "h264", "none", 60, *SUB_STREAM_SIZE, 25, loops=seconds // 60)
    return ensure_clip(scene, "h264", "none", seconds, *SUB_STREAM_SIZE, 25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classify", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,4,8,16,32", help="comma-separated; 1 is the baseline")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=SEGMENT_SECONDS, help="length of the camera clip")
    parser.add_argument("--sample-fps", type=float, default=1.0, help="frames sampled per video second")
    parser.add_argument("--scene", default="cat")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("prefect").setLevel(logging.WARNING)

    from blocks.model_server import TFServingModel
    from stack import model_build
    from stack.simulator.footage import EXPECTED_LABELS
    from stack.tiny_model import serve
    from video.frames import sample_frames

    default = int(TFServingModel.model_fields["batch_size"].default)  # key frames are timed at it
    sizes = sorted({int(s) for s in args.batch_sizes.split(",")} | {1, default})
    base = model_build.ensure_model()
    video = bench_video(args.seconds, args.scene)
    sub_video = sub_stream_video(args.seconds, args.scene)
    frames = next(sample_frames(video, model_build.IMAGE_SIZE, fps=args.sample_fps, batch=max(sizes)))[1]
    in_process = InProcessModel(base, frames)
    print(
        f"classify benchmark: {video.name}, {args.sample_fps:g} frame/s sampled, batch sizes {sizes}, "
        f"{args.repeats} repetitions of each (rotating order)",
        flush=True,
    )

    stage: dict[int, list[float]] = {b: [] for b in sizes}
    limit: dict[int, list[float]] = {b: [] for b in sizes}
    served_only: dict[int, list[float]] = {b: [] for b in sizes}
    seeds: list[float] = []
    key_speed: list[float] = []
    sub_stage: dict[int, list[float]] = {b: [] for b in sizes}
    frame_count = key_count = 0
    with serve(base, model_build.MODEL_NAME, max_batch=max(sizes), timeout=300) as served:
        blocks = {
            b: TFServingModel(
                target=served.target,
                model_name=model_build.MODEL_NAME,
                input_size=model_build.IMAGE_SIZE,
                labels=model_build.labels(base),
                batch_size=b,
            )
            for b in sizes
        }
        expected = EXPECTED_LABELS[args.scene]
        stage_fps(video, blocks[sizes[-1]], args.sample_fps, expected)  # warm the server's first-call paths
        runs: list[int | str] = [*sizes, *(f"sub {b}" for b in sizes), "seeds", "key"]
        for rep in range(args.repeats):
            for b in runs[rep % len(runs) :] + runs[: rep % len(runs)]:
                if isinstance(b, str) and b.startswith("sub "):  # the recorder's sub-stream
                    size = int(b.removeprefix("sub "))
                    fps, _ = stage_fps(sub_video, blocks[size], args.sample_fps, expected)
                    sub_stage[size].append(fps)
                    print(f"  rep {rep + 1}/{args.repeats} sub-stream batch {size:>2}: {fps:6.2f} frames/s",
                          flush=True)  # fmt: skip
                    continue
                if b == "key":  # key-frame screening, at the block's default batch size
                    fps, key_count = stage_fps(
                        video, blocks[default], args.sample_fps, expected, key_frames=True
                    )
                    key_speed.append(fps * args.seconds / key_count)  # video seconds per second
                    print(f"  rep {rep + 1}/{args.repeats} key frames only: {key_count} frames, "
                          f"{key_speed[-1]:6.1f}x realtime", flush=True)  # fmt: skip
                    continue
                if isinstance(b, str):  # "seeds"
                    fps, _ = seeds_fps(video, blocks[1], args.sample_fps, expected)
                    seeds.append(fps)
                    print(f"  rep {rep + 1}/{args.repeats} seeds' way: {fps:6.2f} frames/s", flush=True)
                    continue
                fps, frame_count = stage_fps(video, blocks[b], args.sample_fps, expected)
                stage[b].append(fps)
                count = max(frame_count, IN_PROCESS_FRAMES)
                limit[b].append(in_process.fps(b, count))
                served_only[b].append(served_fps(blocks[b], frames, b, count, expected))
                print(
                    f"  rep {rep + 1}/{args.repeats} batch {b:>2}: stage {fps:6.2f} frames/s, "
                    f"in-process model {limit[b][-1]:6.2f}, over gRPC without decoding "
                    f"{served_only[b][-1]:6.2f}",
                    flush=True,
                )

    stage_med = {b: statistics.median(v) for b, v in stage.items()}
    limit_med = {b: statistics.median(v) for b, v in limit.items()}
    served_med = {b: statistics.median(v) for b, v in served_only.items()}
    sub_med = {b: statistics.median(v) for b, v in sub_stage.items()}
    seeds_med = statistics.median(seeds)
    best, best_sub = max(stage_med.values()), max(sub_med.values())
    chosen = min(b for b in sizes if stage_med[b] >= NEAR_BEST * best and sub_med[b] >= NEAR_BEST * best_sub)
    limit_batch = max(limit_med, key=limit_med.__getitem__)
    reps = f"median of {args.repeats}"
    rows: list[dict] = []
    for b in sizes:
        rows.append(row(f"classify stage, batch_size={b} ({frame_count} frames, {reps})", "frames/s",
                        stage_med[b], seeds_med, BASELINE_SEEDS))  # fmt: skip
    rows.append(row(f"classify stage at the block's default batch_size={default} vs batch_size=1 ({reps})",
                    "frames/s", stage_med[default], stage_med[1], BASELINE_ONE))  # fmt: skip
    rows.append(row(f"classify stage at the block's default batch_size={default} vs the model in-process ({reps})",
                    "frames/s", stage_med[default], limit_med[limit_batch],
                    f"in-process SavedModel, batch {limit_batch}, no decode/gRPC"))  # fmt: skip
    for b in sizes:
        rows.append(row(f"classify stage vs the model in-process, both at batch {b} ({reps})", "frames/s",
                        stage_med[b], limit_med[b], f"in-process SavedModel, batch {b}"))  # fmt: skip
    for b in sizes:
        rows.append(row(f"model over gRPC, frames already decoded, vs in-process, both at batch {b} ({reps})",
                        "frames/s", served_med[b], limit_med[b], f"in-process SavedModel, batch {b}"))  # fmt: skip
    one_fps_speed = stage_med[default] * args.seconds / frame_count
    rows.append(row(f"key frames only ({key_count} frames) vs {args.sample_fps:g} frame/s ({frame_count}), "
                    f"batch {default}, labels checked ({reps})", "x realtime",
                    statistics.median(key_speed), one_fps_speed,
                    f"the stage at {args.sample_fps:g} frame/s"))  # fmt: skip
    sub_size = "x".join(map(str, SUB_STREAM_SIZE))
    for b in sizes:
        rows.append(row(f"classify stage on the recorder's {sub_size} sub-stream, batch_size={b}, vs the model "
                        f"in-process ({reps})", "frames/s", sub_med[b], limit_med[limit_batch],
                        f"in-process SavedModel, batch {limit_batch}, no decode/gRPC"))  # fmt: skip
    rows.append(row(f"classify stage on the {sub_size} sub-stream vs the 1280x720 main stream, both at batch "
                    f"{default} ({reps})", "frames/s", sub_med[default], stage_med[default],
                    "the stage on the main stream"))  # fmt: skip
    path = write_results("classify", rows)
    write_page()
    print_table(rows)
    vs_seeds = stage_med[default] / seeds_med
    vs_one = stage_med[default] / stage_med[1]
    vs_limit = stage_med[default] / limit_med[limit_batch]
    print(f"batch_size {chosen} is the smallest within {100 - NEAR_BEST * 100:.0f} % of the fastest on both "
          f"streams; the block's default is {default}{'' if chosen == default else ': NOT the same'}")  # fmt: skip
    print(f"batched >= 2x one request per frame the seeds' way: {'met' if vs_seeds >= 2 else 'NOT met'} "
          f"({vs_seeds:.2f}x; batching alone, vs batch_size=1 with streamed decoding: {vs_one:.2f}x)")  # fmt: skip
    print(f"batched >= 70 % of in-process: {'met' if vs_limit >= 0.7 else 'NOT met'} ({vs_limit:.0%}; "
          f"over gRPC without decoding: {served_med[default] / limit_med[limit_batch]:.0%})")  # fmt: skip
    vs_limit_sub = sub_med[default] / limit_med[limit_batch]
    print(f"from the {sub_size} sub-stream >= 70 % of in-process: {'met' if vs_limit_sub >= 0.7 else 'NOT met'} "
          f"({vs_limit_sub:.0%})")  # fmt: skip
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
