"""Keys in the video store: where a segment's clip and its objects' thumbnails are kept.

The store is where every machine and the review app find MP4s and thumbnails; a key is a
relative POSIX path in it, made only here, from the segment's identity.
"""

from __future__ import annotations

from datetime import UTC

from core.names import sanitise_name
from core.segment import Segment


def _folder(segment: Segment) -> str:
    day = f"{segment.start.astimezone(UTC):%Y-%m-%d}"
    parts = [sanitise_name(segment.source)] + ([] if segment.sha256 else [str(int(segment.channel))]) + [day]
    return "/".join(parts)


def clip_key(segment: Segment) -> str:
    """`clips/<recorder>/<channel>/<date>/<segment>.mp4` (`clips/<source>/<date>/...` for a file)."""
    return f"clips/{_folder(segment)}/{sanitise_name(segment.name)}.mp4"


def thumbnail_key(segment: Segment, object_id: str) -> str:
    """`thumbnails/<recorder>/<channel>/<date>/<object id>.jpg`."""
    return f"thumbnails/{_folder(segment)}/{sanitise_name(object_id)}.jpg"
