"""Facts about video files from ffprobe: codecs, duration, size; and how to open a Hikvision export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import ServiceError
from video.command import CommandFailed, Runner, run_subprocess

IMKH_MAGIC = b"IMKH"
PS_PACK_START = b"\x00\x00\x01\xba"
PROBE_TIMEOUT_S = 60


class CorruptMedia(ServiceError):
    """The file is not readable video: retrying will not help."""

    retryable = False


@dataclass(frozen=True)
class Probe:
    video_codec: str
    audio_codec: str | None
    duration_s: float | None
    width: int
    height: int
    comment: str = ""  # the container's comment tag: nvrflow writes what made an MP4 there


def input_options(path: Path) -> list[str]:
    """ffmpeg/ffprobe input options: Hikvision exports are MPEG-PS behind a 40-byte IMKH header.

    The header is left in place: ffmpeg's PS demuxer recognises it and then probes the
    audio stream (G.711) instead of assuming MPEG audio.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head in (IMKH_MAGIC, PS_PACK_START):
        return ["-f", "mpeg"]
    return []


def probe(path: Path, run: Runner = run_subprocess) -> Probe:
    argv = [
        "ffprobe",
        "-v",
        "error",
        *input_options(path),
        "-show_entries",
        "stream=codec_type,codec_name,width,height:format=duration:format_tags=comment",
        "-of",
        "json",
        str(path),
    ]
    try:
        out = run(argv, PROBE_TIMEOUT_S, f"ffprobe of {path.name}")
    except CommandFailed as exc:
        raise CorruptMedia(f"{path.name}: not readable as video ({exc})") from None
    # Warnings (stderr is merged into the output) may come before the JSON document.
    first = next((i for i, line in enumerate(out) if line == "{"), len(out))
    try:
        info = json.loads("\n".join(out[first:]))
    except json.JSONDecodeError:
        raise CorruptMedia(f"{path.name}: ffprobe gave no stream list") from None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise CorruptMedia(f"{path.name}: no video stream")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = info.get("format", {}).get("duration")
    return Probe(
        video_codec=video.get("codec_name", "unknown"),
        audio_codec=audio.get("codec_name") if audio else None,
        duration_s=float(duration) if duration not in (None, "N/A") else None,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        comment=str(info.get("format", {}).get("tags", {}).get("comment", "")),
    )
