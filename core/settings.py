"""Where nvrflow keeps its files, and the block names flows use by default."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SINK_BLOCK = "nvrflow"
DEFAULT_MODEL_BLOCK = "nvrflow"


def data_dir() -> Path:
    """Exports, MP4 outputs, outbox: `$NVRFLOW_DATA`, else `data/` in the project."""
    root = Path(os.environ.get("NVRFLOW_DATA", Path(__file__).resolve().parent.parent / "data")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def exports_dir() -> Path:
    """Recorder downloads as they came: <recorder>/<channel>/<date>/<segment>.ps"""
    return data_dir() / "exports"


def mp4_dir() -> Path:
    """Web-playable outputs, same layout as the exports."""
    return data_dir() / "mp4"


def outbox_dir() -> Path:
    """ClickHouse batches kept on this machine's disk while the server was unreachable."""
    path = data_dir() / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path
