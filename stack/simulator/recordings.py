"""The recordings a simulated recorder holds: fixed-length segments per channel, in local time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from stack.simulator import scenes
from stack.simulator.footage import ensure_clip
from stack.simulator.scene_footage import ensure_scene_clip
from stack.simulator.spec import ChannelSpec, RecorderSpec

URI_TIME = "%Y%m%dT%H%M%SZ"
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Segment:
    track_id: int
    channel: ChannelSpec
    start: datetime  # device local time, naive
    end: datetime
    name: str
    path: Path
    size: int

    def playback_uri(self, host: str = "127.0.0.1", name_prefix: str = "") -> str:
        # Devices write local time with a trailing Z into the URI, as in search results.
        return (
            f"rtsp://{host}/Streaming/tracks/{self.track_id}/"
            f"?starttime={self.start.strftime(URI_TIME)}&endtime={self.end.strftime(URI_TIME)}"
            f"&name={name_prefix}{self.name}&size={self.size}"
        )


MAIN, SUB = 1, 2  # a channel's streams: tracks <channel>01 and <channel>02
_SUB_FILE_NUMBER = 5000  # a sub-stream's files are numbered from here, so names stay unique


def track_id(channel_id: int, stream: int = MAIN) -> int:
    return channel_id * 100 + stream


def _given_clip(path: str) -> Path:
    clip = Path(path)
    if not clip.is_file():
        raise FileNotFoundError(f"channel clip {clip} does not exist")
    with clip.open("rb") as head:
        if head.read(4) != b"IMKH":
            raise ValueError(f"channel clip {clip} is not in Hikvision form (no IMKH header)")
    return clip


def build_catalogue(recorder: RecorderSpec, width: int, height: int, fps: int) -> list[Segment]:
    """All segments of all channels, ordered by start time then track; makes the clips it needs.

    A scripted channel's segments are consecutive slices of its script; any other channel
    serves the same clip of its still photo as every segment."""
    segments: list[Segment] = []
    step = timedelta(seconds=recorder.segment_seconds)
    recorded = (recorder.end_local - recorder.start_local).total_seconds()
    for channel in recorder.channels:
        script = (
            scenes.resolve(channel.script, channel.script_seed, recorded, width, height)
            if channel.script
            else None
        )
        streams = [(MAIN, channel.clip, (width, height), channel.audio)]
        if channel.sub_size:
            streams.append((SUB, channel.sub_clip, channel.sub_size, "none"))
        for stream, given, (w, h), audio in streams:
            start, index = recorder.start_local, 0
            while start < recorder.end_local:
                end = min(start + step, recorder.end_local)
                seconds = int((end - start).total_seconds())
                if seconds <= 0:
                    break
                offset = int((start - recorder.start_local).total_seconds())
                if given:
                    clip = _given_clip(given)
                elif script is not None:
                    clip = ensure_scene_clip(script, offset, seconds, channel.codec, audio, w, h, fps)
                else:
                    clip = ensure_clip(channel.scene, channel.codec, audio, seconds, w, h, fps)
                number = index % _SUB_FILE_NUMBER + (_SUB_FILE_NUMBER if stream == SUB else 0)
                # 17 digits like device file names; unique per recorder across channels and streams.
                name = f"{channel.id:03d}{int((start - _EPOCH).total_seconds()) % 10**10:010d}{number:04d}"
                segments.append(
                    Segment(
                        track_id(channel.id, stream), channel, start, end, name, clip, clip.stat().st_size
                    )
                )
                start, index = end, index + 1
    segments.sort(key=lambda s: (s.start, s.track_id))
    return segments


def find_overlapping(
    segments: list[Segment], tracks: set[int], spans: list[tuple[datetime, datetime]]
) -> list[Segment]:
    """Segments of the tracks that overlap any span (touching at an edge does not count)."""
    return [
        s
        for s in segments
        if s.track_id in tracks and any(s.start < end and s.end > start for start, end in spans)
    ]


def parse_playback_uri(uri: str) -> tuple[int | None, dict[str, str]]:
    """Track id from the path and the query parameters (names lower-cased)."""
    parts = urlsplit(uri.strip())
    track = None
    pieces = [p for p in parts.path.split("/") if p]
    if "tracks" in pieces:
        after = pieces.index("tracks") + 1
        if after < len(pieces) and pieces[after].isdigit():
            track = int(pieces[after])
    query = {k.lower(): v[0] for k, v in parse_qs(parts.query).items()}
    return track, query
