"""A segment's identity: the one place cache keys and deduplication tokens come from.

A `Segment` is one piece of video that goes through the stages, either a recording
found on a recorder or a file ingested from outside. Its `key` says which footage it
is, and changes whenever the footage does:

- a recording: `<recorder>/<channel>/<segment name>/<size>`. A recorder may re-record
  a segment under the same name (a retention overwrite, an edit on the device); the
  size then differs, and every stage runs again.
- an ingested file: `ingest/<source>/<sha256 of the content>`. The same bytes under
  another name or time are the same segment; other bytes are another.

Each stage derives its key from the segment's key, the stage's own version (bumped
when the stage's code changes what it produces) and the settings that shape its
output (`stage_key`). The insert deduplication tokens of the rows a segment produces
are those stage keys, so a retried or repeated insert of the same result is dropped by
ClickHouse, and a new result (new footage, new options, new model) is inserted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.names import UnsafeNameError, sanitise_name

INGEST_CHANNEL = 0
_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Segment:
    """One piece of footage; `key` is its identity, `label` how messages name it."""

    source: str  # the recorder's block name, or the ingest source name
    channel: int  # the recorder's channel; INGEST_CHANNEL for ingested files
    name: str  # the recorder's segment name, or `<sha256[:16]>-<file stem>` for a file
    start: datetime  # UTC
    end: datetime | None  # UTC; unknown for an ingested file until it is probed
    size: int  # bytes: as the recorder announced them, or the file's size
    sha256: str = ""  # the content hash of an ingested file; recorders do not give one

    @classmethod
    def of_recording(
        cls, recorder: str, channel: int, name: str, start: datetime, end: datetime, size: int
    ) -> Segment:
        return cls(recorder, channel, name, start.astimezone(UTC), end.astimezone(UTC), size)

    @classmethod
    def of_file(cls, source: str, file_name: str, sha256: str, size: int, start: datetime) -> Segment:
        return cls(check_source(source), INGEST_CHANNEL, file_segment_name(sha256, file_name),
                   start.astimezone(UTC), None, size, sha256)  # fmt: skip

    @property
    def key(self) -> str:
        if self.sha256:
            return f"ingest/{self.source}/{self.sha256}"
        return f"{self.source}/{self.channel}/{self.name}/{self.size}"

    @property
    def label(self) -> str:
        if self.sha256:
            return f"{self.source} {self.name}"
        return f"{self.source} ch{self.channel} {self.name}"


def stage_key(segment: Segment, stage: str, version: int, settings: Mapping[str, Any] | None = None) -> str:
    """`<stage>/v<version>/<segment key>[/<digest of the settings>]`: a cache key and a dedup token.

    `settings` holds only what changes the stage's output (a codec preset, a model
    version, a sampling rate), never timeouts or secrets.
    """
    key = f"{stage}/v{version}/{segment.key}"
    if settings:
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
        key += "/" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return key


def check_source(source: str) -> str:
    """An ingest source names a folder and a `recorder` value: no paths, no surprises."""
    if not _SOURCE_RE.match(source or ""):
        raise ValueError(
            f"source {source!r}: use 1-64 letters, digits, '.', '_' or '-', not starting with a symbol"
        )
    return source


def file_segment_name(sha256: str, file_name: str) -> str:
    """`<sha256[:16]>-<file stem>`, the stem made safe by the one name rule and trimmed of separators at
    its ends (as ingested segments have always been named: their names are in the rows' keys);
    `video` when nothing is left."""
    try:
        stem = sanitise_name(Path(file_name).stem).strip("._")
    except UnsafeNameError:
        stem = ""
    return f"{sha256[:16]}-{stem or 'video'}"


def mp4_path(segment: Segment, mp4_root: Path) -> Path:
    """Where a segment's MP4 is kept under `mp4_root`: `<recorder>/<channel>/<date>/<name>.mp4` for a
    recording (the export's place), `<source>/<date>/<name>.mp4` for an ingested file (dates UTC).

    The one place an MP4's path is made; ValueError for a name no path can take (a hostile
    recorder's), which never leaves `mp4_root`.
    """
    day = f"{segment.start.astimezone(UTC):%Y-%m-%d}"
    folder = [sanitise_name(segment.source)] + ([] if segment.sha256 else [str(int(segment.channel))]) + [day]
    root = mp4_root.resolve()
    path = root.joinpath(*folder, f"{sanitise_name(segment.name)}.mp4").resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"{segment.label}: MP4 path {path} escapes {root}")
    return path


def content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
