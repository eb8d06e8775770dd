"""Transcode stage: a recorder export becomes a web-playable MP4 (H.264, AAC, faststart).

ffprobe decides: H.264 is stream-copied (remux), anything else is re-encoded with
libx264. The output is verified before it replaces anything, so a half-written or
wrong file never carries the final name.
"""

from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from blocks.recorder import DownloadResult
from flows.media import CorruptMedia, Probe, input_options, is_faststart, probe
from flows.retries import retry_when
from flows.settings import exports_dir, mp4_dir
from flows.shell import CommandFailed, run_command


class TranscodeOptions(BaseModel):
    engine: Literal["ffmpeg", "handbrake"] = "ffmpeg"
    preset: str = "veryfast"
    crf: int = 23
    audio: Literal["aac", "drop"] = "aac"
    audio_bitrate_k: int = 96
    timeout_s: float = 900.0


@dataclass(frozen=True)
class TranscodeResult:
    output: Path
    mode: str  # "remux", "x264" or "handbrake"
    source_codec: str
    duration_s: float
    reused: bool


def plan(source: Probe, options: TranscodeOptions) -> str:
    if options.engine == "handbrake":
        return "handbrake"
    return "remux" if source.video_codec == "h264" else "x264"


def ffmpeg_argv(src: Path, dst: Path, mode: str, options: TranscodeOptions) -> list[str]:
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    argv += ["-fflags", "+genpts", *input_options(src), "-i", str(src), "-map", "0:v:0"]
    if mode == "remux":
        argv += ["-c:v", "copy"]
    else:
        argv += [
            "-c:v",
            "libx264",
            "-preset",
            options.preset,
            "-crf",
            str(options.crf),
            "-pix_fmt",
            "yuv420p",
        ]
    if options.audio == "aac":
        # G.711 and most recorder audio cannot go into MP4 as it is: always AAC ("?": if any).
        argv += ["-map", "0:a:0?", "-c:a", "aac", "-aac_coder", "fast", "-b:a", f"{options.audio_bitrate_k}k"]
    else:
        argv += ["-an"]
    argv += ["-movflags", "+faststart", "-f", "mp4", str(dst)]
    return argv


def handbrake_argv(src: Path, dst: Path, options: TranscodeOptions) -> list[str]:
    """The command operators already know (x264 RF 22, 15 fps, 96 kb/s audio, web-optimised)."""
    return ["HandBrakeCLI", "-i", str(src), "-o", str(dst), "-e", "x264", "-q", "22", "-r", "15",
            "-B", str(options.audio_bitrate_k), "-O"]  # fmt: skip


def verify_output(path: Path, expected_duration_s: float | None) -> Probe:
    """Accept an output only if it is H.264, as long as its source, with moov before mdat."""
    out = probe(path)
    problems = []
    if out.video_codec != "h264":
        problems.append(f"video is {out.video_codec}, not h264")
    if expected_duration_s and (out.duration_s is None or abs(out.duration_s - expected_duration_s) > 1.0):
        problems.append(f"duration {out.duration_s} s, source {expected_duration_s:.2f} s")
    if not is_faststart(path):
        problems.append("moov atom is not before mdat")
    if problems:
        raise CorruptMedia(f"{path.name}: output rejected: " + "; ".join(problems))
    return out


def transcode_file(
    src: Path, dst: Path, options: TranscodeOptions, expected_duration_s: float | None = None
) -> TranscodeResult:
    """Make `dst` from `src`; an existing verified `dst` is kept as it is.

    Most recorder video is H.264, so with the ffmpeg engine the remux starts at once, while
    ffprobe looks at the source, and is kept only if ffprobe says H.264: the two programs'
    start-up times overlap instead of adding up.
    """
    tmp = dst.with_name(dst.stem + ".part.mp4")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="remux") as pool:
            early = None
            if options.engine == "ffmpeg" and not dst.exists():
                remux = ffmpeg_argv(src, tmp, "remux", options)
                in_context = contextvars.copy_context().run  # its output goes to the task run's log
                early = pool.submit(
                    in_context, run_command, remux, options.timeout_s, f"ffmpeg on {src.name}"
                )
            source = probe(src)
            expected = expected_duration_s or source.duration_s
            mode = plan(source, options)
            if early is None and dst.exists():
                try:
                    verify_output(dst, expected)
                    return TranscodeResult(dst, mode, source.video_codec, expected or 0.0, reused=True)
                except CorruptMedia:
                    dst.unlink()
            if early is not None and mode == "remux":
                early.result()
            else:
                if early is not None:
                    early.exception()  # not H.264: wait for the remux to end, then write over it
                argv = (
                    handbrake_argv(src, tmp, options)
                    if mode == "handbrake"
                    else ffmpeg_argv(src, tmp, mode, options)
                )
                run_command(argv, options.timeout_s, f"{argv[0]} on {src.name}")
            out = verify_output(tmp, expected)
            os.replace(tmp, dst)
    except CommandFailed as exc:
        raise CorruptMedia(f"{src.name}: transcode failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # the pool has waited for the early remux by now
    return TranscodeResult(dst, mode, source.video_codec, out.duration_s or 0.0, reused=False)


# Corrupt input stays corrupt; anything else (a killed encoder, a full disk freed) may heal.
retry_unless_corrupt = retry_when(lambda exc: not isinstance(exc, CorruptMedia))


def mp4_path_for(export: Path, exports_root: Path, mp4_root: Path) -> Path:
    """The MP4 of an export keeps the export's place: <recorder>/<channel>/<date>/<segment>.mp4."""
    return mp4_root / export.relative_to(exports_root).with_suffix(".mp4")


def transcode_key(context, parameters) -> str:
    download: DownloadResult = parameters["download"]
    options: TranscodeOptions = parameters["options"]
    return f"transcode/{parameters['label']}/{download.bytes}/{options.model_dump_json()}"


@task(
    name="transcode",
    cache_key_fn=transcode_key,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_corrupt,
    task_run_name="transcode {label}",
)
def transcode_segment(
    download: DownloadResult, label: str, options: TranscodeOptions, expected_duration_s: float | None = None
) -> TranscodeResult:
    dst = mp4_path_for(download.path, exports_dir(), mp4_dir())
    return transcode_file(download.path, dst, options, expected_duration_s)
