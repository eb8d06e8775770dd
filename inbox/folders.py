"""Where an ingested file goes while and after it is processed (all under `data_dir()/ingest/`).

- `processing/`: the run first moves the file here, so that nobody changes it under the
  run and a watcher restart does not announce it again;
- `done/`: after its rows were persisted (or kept in the outbox);
- `failed/`: on any failure, next to `<name>.reason.txt` saying why. Nothing is deleted:
  to try again, move the file back into the watched folder or run the deployment on it.
"""

from __future__ import annotations

import os
import shutil
import traceback
from datetime import UTC, datetime
from pathlib import Path

from core.errors import is_retryable
from core.segment import Segment, content_sha256
from core.settings import data_dir


def ingest_dir(kind: str) -> Path:
    """`processing`, `done` or `failed` under `data_dir()/ingest/`."""
    path = data_dir() / "ingest" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe_file(path: Path, source: str, start: datetime | None = None) -> Segment:
    """Hash and date a file; without `start`, its modification time stands for the recording's start."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (already ingested by another run?)")
    if start is None:
        start = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    elif start.tzinfo is None:
        raise ValueError("start needs a time zone (e.g. 2026-11-01T10:00:00Z)")
    return Segment.of_file(source, path.name, content_sha256(path), path.stat().st_size, start)


def _free_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/<stem>-<n><suffix>` if that is taken: never overwrite a kept file."""
    candidate = folder / name
    n = 1
    while candidate.exists() or candidate.with_name(candidate.name + ".reason.txt").exists():
        candidate = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        n += 1
    return candidate


def move_into(path: Path, folder: Path) -> Path:
    """Move `path` into `folder` under a free name (rename when possible, else copy then delete)."""
    target = _free_path(folder, path.name)
    shutil.move(path, target)
    return target


def claim(path: Path) -> Path:
    """Take the file out of the watched folder before working on it."""
    folder = ingest_dir("processing")
    if path.parent.resolve() == folder.resolve():
        return path
    return move_into(path, folder)


def set_aside(path: Path, reason: str) -> Path:
    """Keep a file that could not be ingested in failed/, with `<name>.reason.txt` next to it."""
    target = move_into(path, ingest_dir("failed"))
    note = target.with_name(target.name + ".reason.txt")
    tmp = note.with_name("." + note.name + ".tmp")
    tmp.write_text(reason, encoding="utf-8")
    os.replace(tmp, note)
    return target


def failure_reason(original: Path, segment: Segment | None, exc: BaseException, flow_run_id: str) -> str:
    transient = is_retryable(exc)
    lines = [
        f"file: {original}",
        f"failed at: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"flow run: {flow_run_id or '-'}",
    ]
    if segment is not None:
        lines += [f"source: {segment.source}", f"sha256: {segment.sha256}", f"bytes: {segment.size}"]
    lines += [
        f"error: {type(exc).__name__}: {exc}",
        "",
        "This may be transient (a service down): move the file back into the watched folder to try again."
        if transient
        else "The file is not usable as video, or a setting named above is wrong: fix or replace it.",
    ]
    if transient:
        lines += ["", "".join(traceback.format_exception_only(exc)).strip()]
    return "\n".join(lines) + "\n"
