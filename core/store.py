"""Keys in the video store: where a segment's clip and its objects' thumbnails are kept.

The store is where every machine and the review app find MP4s and thumbnails; a key is a
relative POSIX path in it, made only here, from the segment's identity.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.names import sanitise_name
from core.segment import INGEST_CHANNEL, Segment

CLIPS, THUMBNAILS = "clips", "thumbnails"


def _folder(source: str, channel: int | None, start: datetime) -> str:
    day = f"{start.astimezone(UTC):%Y-%m-%d}"
    parts = [sanitise_name(source)] + ([] if channel is None else [str(int(channel))]) + [day]
    return "/".join(parts)


def _segment_folder(segment: Segment) -> str:
    return _folder(segment.source, None if segment.sha256 else segment.channel, segment.start)


def clip_key(segment: Segment) -> str:
    """`clips/<recorder>/<channel>/<date>/<segment>.mp4` (`clips/<source>/<date>/...` for a file)."""
    return f"{CLIPS}/{_segment_folder(segment)}/{sanitise_name(segment.name)}.mp4"


def thumbnail_key(segment: Segment, object_id: str) -> str:
    """`thumbnails/<recorder>/<channel>/<date>/<object id>.jpg`."""
    return f"{THUMBNAILS}/{_segment_folder(segment)}/{sanitise_name(object_id)}.jpg"


def row_clip_key(recorder: str, channel: int, segment: str, start: datetime) -> str:
    """The clip key of a `segments` row: `clip_key` of the segment it describes (an ingested
    file's row is the one on INGEST_CHANNEL). UnsafeNameError for a name no key can take."""
    channel_part = None if channel == INGEST_CHANNEL else channel
    return f"{CLIPS}/{_folder(recorder, channel_part, start)}/{sanitise_name(segment)}.mp4"
