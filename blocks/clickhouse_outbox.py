"""The outbox: ClickHouse batches kept on disk while the server is unreachable.

A batch is written so that it survives a crash (temp file, fsync, atomic rename, fsync
of the folder), under a name made from its table and token, so keeping the same batch
twice leaves one file. `flush` sends each file with `ClickHouseWriter.write` and deletes
it only after the server acknowledged it; the batch's token makes a repeat harmless, so
workers on several machines may share one outbox folder (`NVRFLOW_OUTBOX`) and flush it
at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from blocks.clickhouse import Batch, ClickHouseSink, ClickHouseUnavailable
from blocks.clickhouse_schema import row_from_json, row_to_json


def keep(batch: Batch, folder: Path) -> Path:
    """Write the batch durably into `folder`; returns its file."""
    name = hashlib.sha256(f"{batch.table}\0{batch.token}".encode()).hexdigest()[:32] + ".json"
    final = folder / name
    tmp = folder / f".{name}.tmp"
    payload = {
        "table": batch.table,
        "token": batch.token,
        "scope": list(batch.scope) if batch.scope else None,
        "rows": [row_to_json(row) for row in batch.rows],
    }
    with open(tmp, "w") as fh:
        fh.write(json.dumps(payload))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def read(path: Path) -> Batch:
    raw = json.loads(path.read_text())
    scope = raw.get("scope")
    return Batch(
        raw["table"],
        raw["token"],
        tuple(row_from_json(raw["table"], row) for row in raw["rows"]),
        (str(scope[0]), int(scope[1]), str(scope[2])) if scope else None,
    )


def pending(folder: Path) -> list[Path]:
    """The batch files waiting in `folder`, oldest name first."""
    return sorted(folder.glob("*.json"))


def oldest_age_s(folder: Path) -> float:
    """Seconds the oldest waiting batch has been on disk (0 when none waits)."""
    ages = []
    for path in pending(folder):
        try:
            ages.append(time.time() - path.stat().st_mtime)
        except FileNotFoundError:
            continue  # sent meanwhile by a flush on another machine
    return max(ages, default=0.0)


def flush(sink: ClickHouseSink, folder: Path) -> tuple[int, int]:
    """Send every waiting batch; delete each file only after its write was acknowledged.

    Returns (sent, still waiting). One attempt per file: the flush itself runs on a schedule.
    """
    sent = remaining = 0
    files = pending(folder)
    if not files:
        return 0, 0
    try:
        writer = sink.connect()
    except ClickHouseUnavailable:
        return 0, len(files)
    with writer:
        for path in files:
            try:
                writer.write(read(path))
            except ClickHouseUnavailable:
                remaining += 1
                continue
            except FileNotFoundError:
                continue  # a flush on another machine sharing the folder sent it first
            path.unlink(missing_ok=True)
            sent += 1
    return sent, remaining
