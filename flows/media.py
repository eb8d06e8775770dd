"""Facts about media files: ffprobe for streams, a box walk for MP4 layout."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from flows.shell import CommandFailed, run_command

IMKH_MAGIC = b"IMKH"
PS_PACK_START = b"\x00\x00\x01\xba"
PROBE_TIMEOUT_S = 60


class CorruptMedia(Exception):
    """The file is not readable video: retrying will not help."""


@dataclass(frozen=True)
class Probe:
    video_codec: str
    audio_codec: str | None
    duration_s: float | None
    width: int
    height: int


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


def probe(path: Path) -> Probe:
    argv = [
        "ffprobe",
        "-v",
        "error",
        *input_options(path),
        "-show_entries",
        "stream=codec_type,codec_name,width,height:format=duration",
        "-of",
        "json",
        str(path),
    ]
    try:
        out = run_command(argv, PROBE_TIMEOUT_S, f"ffprobe of {path.name}")
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
    )


def top_level_boxes(path: Path) -> list[str]:
    """Names of the MP4 top-level boxes, in file order."""
    names = []
    size_total = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size_total:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            names.append(kind.decode("latin-1"))
            offset += size
    return names


def is_faststart(path: Path) -> bool:
    boxes = top_level_boxes(path)
    return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
