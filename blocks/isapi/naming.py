"""File names for downloaded segments.

Names come from the device (segment name) and from configuration (recorder name): both
go through the one safe-name rule (`core.names`) and the final path is checked to stay
inside data_dir, so neither a hostile recorder nor a typo in the inventory can write elsewhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core.names import UnsafeNameError, sanitise_name

__all__ = ["UnsafeNameError", "sanitise_name", "segment_path"]


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
