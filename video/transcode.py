"""Making a recorder export web-playable: MP4, H.264, AAC, moov before mdat.

ffprobe decides: H.264 is stream-copied (remux), anything else is re-encoded with
libx264 (or the HandBrakeCLI command operators know). The output is verified before it
replaces anything, so a half-written or wrong file never carries the final name.
"""

from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from video.command import CommandFailed, Runner, run_subprocess
from video.mp4 import is_faststart
from video.probe import CorruptMedia, Probe, input_options, probe


class TranscodeOptions(BaseModel):
    """How exports become MP4s. Everything but `timeout_s` shapes the output, so it is in the cache key."""

    engine: Literal["ffmpeg", "handbrake"] = Field(
        default="ffmpeg", description="ffmpeg (remux H.264, x264 for the rest) or the HandBrakeCLI command."
    )
    preset: str = Field(default="veryfast", description="x264 preset for video that is not H.264.")
    crf: int = Field(default=23, ge=0, le=51, description="x264 quality (lower is better, larger).")
    audio: Literal["aac", "drop"] = Field(default="aac", description="G.711 cannot go into MP4: AAC or none.")
    audio_bitrate_k: int = Field(default=96, ge=16, le=512, description="AAC bitrate, kb/s.")
    timeout_s: float = Field(default=900.0, gt=0, description="Longest one encoder run may take, seconds.")

    def output_settings(self) -> dict[str, object]:
        """What shapes the MP4: part of the transcode cache key and of the rows' tokens."""
        return self.model_dump(exclude={"timeout_s"})


@dataclass(frozen=True)
class TranscodeResult:
    output: Path
    mode: str  # "remux", "x264" or "handbrake"
    source_codec: str
    duration_s: float
    reused: bool
    key: str = ""  # the transcode stage key the pipeline made this output under (core.segment.stage_key)


def plan(source: Probe, options: TranscodeOptions) -> str:
    if options.engine == "handbrake":
        return "handbrake"
    return "remux" if source.video_codec == "h264" else "x264"


def ffmpeg_argv(src: Path, dst: Path, mode: str, options: TranscodeOptions, made_from: str = "") -> list[str]:
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
    if made_from:  # read back by the next run to tell whether the file on disk is this output
        argv += ["-metadata", f"comment={made_from}"]
    argv += ["-movflags", "+faststart", "-f", "mp4", str(dst)]
    return argv


def handbrake_argv(src: Path, dst: Path, options: TranscodeOptions) -> list[str]:
    """The command operators already know (x264 RF 22, 15 fps, 96 kb/s audio, web-optimised)."""
    return ["HandBrakeCLI", "-i", str(src), "-o", str(dst), "-e", "x264", "-q", "22", "-r", "15",
            "-B", str(options.audio_bitrate_k), "-O"]  # fmt: skip


def verify_output(path: Path, expected_duration_s: float | None, run: Runner = run_subprocess) -> Probe:
    """Accept an output only if it is H.264, as long as its source, with moov before mdat."""
    out = probe(path, run)
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
    src: Path,
    dst: Path,
    options: TranscodeOptions,
    expected_duration_s: float | None = None,
    run: Runner = run_subprocess,
    made_from: str = "",
) -> TranscodeResult:
    """Make `dst` from `src`. An existing `dst` is kept only if it verifies and its comment tag
    says it was made from `made_from` (the caller's key for this footage and these options):
    a file left by other footage under the same name, or by other options, is made again.

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
                remux = ffmpeg_argv(src, tmp, "remux", options, made_from)
                in_context = contextvars.copy_context().run  # its output goes to the task run's log
                early = pool.submit(in_context, run, remux, options.timeout_s, f"ffmpeg on {src.name}")
            source = probe(src, run)
            expected = expected_duration_s or source.duration_s
            mode = plan(source, options)
            if early is None and dst.exists():
                try:
                    if made_from and verify_output(dst, expected, run).comment == made_from:
                        return TranscodeResult(dst, mode, source.video_codec, expected or 0.0, reused=True)
                except CorruptMedia:
                    pass
                dst.unlink()  # broken, or made from other footage or with other options
            if early is not None and mode == "remux":
                early.result()
            else:
                if early is not None:
                    early.exception()  # not H.264: wait for the remux to end, then write over it
                argv = (
                    handbrake_argv(src, tmp, options)
                    if mode == "handbrake"
                    else ffmpeg_argv(src, tmp, mode, options, made_from)
                )
                run(argv, options.timeout_s, f"{argv[0]} on {src.name}")
            out = verify_output(tmp, expected, run)
            os.replace(tmp, dst)
    except CommandFailed as exc:
        if exc.retryable:  # stopped or killed, not refused: another try may get through
            raise
        raise CorruptMedia(f"{src.name}: transcode failed: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # the pool has waited for the early remux by now
    return TranscodeResult(dst, mode, source.video_codec, out.duration_s or 0.0, reused=False)
