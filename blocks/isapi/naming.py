"""File names for downloaded segments.

Names come from the device (segment name) and from configuration (recorder name): both
are reduced to `[A-Za-z0-9._-]` and the final path is checked to stay inside data_dir, so
neither a hostile recorder nor a typo in the inventory can write elsewhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 120


class UnsafeNameError(ValueError):
    pass


def sanitise_name(raw: str) -> str:
    """Map a device- or user-given name to a safe single path component.

    Runs of other characters become `_`; leading dots are dropped so that the result is
    never `.`, `..` or a hidden file. An empty result is refused.
    """
    cleaned = _UNSAFE.sub("_", raw).lstrip(".")[:MAX_NAME_LENGTH]
    if not cleaned.strip("_"):
        raise UnsafeNameError(f"name {raw!r} has no usable characters")
    return cleaned


def segment_path(data_dir: Path, recorder: str, channel: int, start_utc: datetime, name: str) -> Path:
    """`data_dir/<recorder>/<channel>/<YYYY-MM-DD of start, UTC>/<name>.ps`, proven to be under data_dir."""
    root = data_dir.resolve()
    day = start_utc.astimezone(UTC).strftime("%Y-%m-%d")
    candidate = (
        root / sanitise_name(recorder) / str(int(channel)) / day / f"{sanitise_name(name)}.ps"
    ).resolve()
    if not candidate.is_relative_to(root) or candidate == root:
        raise UnsafeNameError(f"segment path {candidate} escapes {root}")
    return candidate
