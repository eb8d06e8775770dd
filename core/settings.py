"""Where nvrflow keeps its files, and the block names flows use by default."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

FOLDER_ID_FILE = ".nvrflow-folder-id"

DEFAULT_SINK_BLOCK = "nvrflow"
DEFAULT_MODEL_BLOCK = "nvrflow"
# MP4 clips and thumbnails, where every worker and the review app reach them (blocks/video_store.py).
DEFAULT_VIDEO_STORE_BLOCK = "nvrflow-video"

# The video store's retention (flows/retention.py, doctor): its size limit and how long clips and
# thumbnails are kept, unless a run says otherwise.
STORE_BUDGET_GB_VAR, DEFAULT_STORE_BUDGET_GB = "NVRFLOW_STORE_BUDGET_GB", 50.0
STORE_KEEP_DAYS_VAR, DEFAULT_STORE_KEEP_DAYS = "NVRFLOW_STORE_KEEP_DAYS", 30.0


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
    """ClickHouse batches kept while the server was unreachable: `$NVRFLOW_OUTBOX`, else the data folder's.

    With several machines, point `NVRFLOW_OUTBOX` of every worker at one shared folder, so that
    the scheduled flush sends what any of them kept, wherever it runs.
    """
    path = Path(os.environ["NVRFLOW_OUTBOX"]) if os.environ.get("NVRFLOW_OUTBOX") else data_dir() / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_budget_gb() -> float:
    """The video store's size limit in GB (10^9 bytes): `$NVRFLOW_STORE_BUDGET_GB`, else 50.

    Retention deletes the oldest clips and thumbnails while the store is over it; doctor warns
    from 90 % of it.
    """
    return _positive(STORE_BUDGET_GB_VAR, DEFAULT_STORE_BUDGET_GB)


def store_keep_days() -> float:
    """Days clips and thumbnails are kept (budget permitting): `$NVRFLOW_STORE_KEEP_DAYS`, else 30."""
    return _positive(STORE_KEEP_DAYS_VAR, DEFAULT_STORE_KEEP_DAYS)


def _positive(variable: str, default: float) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r}: give a number, e.g. {default:g}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{variable}={text!r}: give a number above 0, e.g. {default:g}")
    return value


def data_folder_id() -> str:
    """An id made once per data folder: machines that share a folder share it, others do not.

    Cached results that name a file (an export, an MP4) are keyed by it, so a worker never takes
    another data folder's path for its own.
    """
    marker = data_dir() / FOLDER_ID_FILE
    try:
        return marker.read_text().strip()
    except FileNotFoundError:
        pass
    candidate = uuid.uuid4().hex
    # A file of its own per caller (threads of one process too), complete before it is linked:
    # the marker never holds a partial id, and no caller overwrites the id another one linked.
    tmp = marker.with_name(f"{FOLDER_ID_FILE}.{candidate}.tmp")
    tmp.write_text(candidate)
    try:
        os.link(tmp, marker)  # the first writer wins; everyone then reads its id
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return marker.read_text().strip()
