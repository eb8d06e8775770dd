"""Transcode benchmark: nvrflow's transcode stage against the seeds' HandBrakeCLI command.

`python -m bench.transcode` (or `make bench-transcode`) takes the same Hikvision-form H.264
and H.265 sources (60 s, 1280x720, 25 fps, G.711 audio by default; made once by the
simulator's footage module and cached under `cache_dir()/footage/`) through:
  nvrflow   `flows.transcode.transcode_file(src, dst, TranscodeOptions())`, in this process:
            ffprobe, then remux (H.264) or libx264 veryfast CRF 23 (anything else), then the
            output check (ffprobe + moov-before-mdat); all of it is timed;
  baseline  `HandBrakeCLI -i SRC -o DST -e x264 -q 22 -r 15 -B 96 -O` as the seeds run it,
            a child process timed from spawn to exit (its output is checked afterwards,
            untimed, with the same check nvrflow applies to its own).
Both sides run on the same file in the same run, alternating which goes first in each
repetition, so that other load on the machine falls on both alike; the median of the
repetitions is reported. Realtime factor = source seconds / wall seconds.

Rows go to `bench/results/transcode.json` (format in `bench.common`) and are printed.
Outputs are written under `cache_dir()/bench/` and deleted afterwards.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import print_table, row, run_measured, write_results
from bench.results_page import write_page
from stack.paths import cache_dir
from stack.simulator.footage import ensure_clip
from video.probe import probe
from video.transcode import TranscodeOptions, handbrake_argv, transcode_file, verify_output

BASELINE_NAME = "HandBrakeCLI -e x264 -q 22 -r 15 -B 96 -O"
HANDBRAKE_TIMEOUT_S = 1800
REMUX_TARGET_X = 100.0
MB = 1_000_000


@dataclass
class Side:
    seconds: list[float]
    output_bytes: int = 0
    mode: str = ""


def run_nvrflow(src: Path, dst: Path) -> tuple[float, str, int]:
    dst.unlink(missing_ok=True)  # an existing verified output would be reused, not made
    started = time.perf_counter()
    result = transcode_file(src, dst, TranscodeOptions())
    seconds = time.perf_counter() - started
    if result.reused:
        raise RuntimeError(f"{dst} was reused, not transcoded")
    size = dst.stat().st_size
    dst.unlink()
    return seconds, result.mode, size


def run_handbrake(src: Path, dst: Path, duration_s: float) -> tuple[float, int]:
    dst.unlink(missing_ok=True)
    measured = run_measured(handbrake_argv(src, dst, TranscodeOptions()), timeout=HANDBRAKE_TIMEOUT_S)
    if measured.returncode != 0 or measured.timed_out:
        tail = "\n".join(measured.stderr.splitlines()[-10:])
        raise RuntimeError(f"HandBrakeCLI failed on {src.name} ({measured.returncode}):\n{tail}")
    verify_output(dst, duration_s)
    size = dst.stat().st_size
    dst.unlink()
    return measured.seconds, size


def bench_codec(codec: str, args: argparse.Namespace, work: Path) -> tuple[float, Side, Side]:
    src = ensure_clip(args.scene, codec, args.audio, args.seconds, args.width, args.height, args.fps)
    duration = probe(src).duration_s or float(args.seconds)
    ours, theirs = Side([]), Side([])
    for rep in range(args.repeats):
        order = ("nvrflow", "handbrake") if rep % 2 == 0 else ("handbrake", "nvrflow")
        for side in order:
            if side == "nvrflow":
                seconds, ours.mode, ours.output_bytes = run_nvrflow(src, work / f"nvrflow-{codec}.mp4")
                ours.seconds.append(seconds)
            else:
                seconds, theirs.output_bytes = run_handbrake(src, work / f"handbrake-{codec}.mp4", duration)
                theirs.seconds.append(seconds)
            print(f"  {codec} rep {rep + 1}/{args.repeats} {side}: {seconds:.2f} s", flush=True)
    return duration, ours, theirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transcode", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="source length")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--scene", default="cat")
    parser.add_argument("--audio", default="g711u", help="none, g711u or g711a")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each side per source")
    args = parser.parse_args(argv)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # one line per shell command otherwise

    shape = f"{args.seconds} s {args.width}x{args.height} {args.fps} fps"
    print(
        f"transcode benchmark: {shape} sources, {args.repeats} repetitions per side, interleaved", flush=True
    )
    rows: list[dict] = []
    verdicts: list[str] = []
    bench_dir = cache_dir() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="transcode-", dir=bench_dir))
    try:
        for codec, label in (("h264", "H.264"), ("h265", "H.265")):
            duration, ours, theirs = bench_codec(codec, args, work)
            our_s, their_s = statistics.median(ours.seconds), statistics.median(theirs.seconds)
            what = f"{label} {shape}, nvrflow {ours.mode}, median of {args.repeats}"
            rows.append(row(f"{what}: realtime factor (higher is better)", "x realtime",
                            duration / our_s, duration / their_s, BASELINE_NAME))  # fmt: skip
            rows.append(row(f"{what}: wall time (lower is better)", "s", our_s, their_s, BASELINE_NAME))
            rows.append(row(f"{label} {shape}: output size", "MB",
                            ours.output_bytes / MB, theirs.output_bytes / MB, BASELINE_NAME))  # fmt: skip
            if codec == "h264":
                ok = duration / our_s >= REMUX_TARGET_X
                verdicts.append(f"H.264 remux >= {REMUX_TARGET_X:.0f}x realtime: {'met' if ok else 'NOT met'} "
                                f"({duration / our_s:.1f}x)")  # fmt: skip
            else:
                ok = our_s < their_s
                verdicts.append(f"H.265 faster than HandBrakeCLI: {'met' if ok else 'NOT met'} "
                                f"({our_s:.1f} s vs {their_s:.1f} s)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_results("transcode", rows)
    write_page()
    print_table(rows)
    for line in verdicts:
        print(line)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
