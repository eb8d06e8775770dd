"""Persist stage: segment metadata and detections into ClickHouse, exactly once.

Each batch carries an insert_deduplication_token made from its natural key, so a
retried or repeated insert never adds rows. When ClickHouse stays unreachable, the
batch is written durably to the outbox (fsync, atomic rename) and `flush_outbox`
sends it later, deleting the file only after the server acknowledged the insert.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger

from blocks.clickhouse import ClickHouseSink, ClickHouseUnavailable
from blocks.recorder import Recording
from flows.classify import Classification
from flows.settings import DEFAULT_SINK_BLOCK, data_dir
from flows.transcode import TranscodeResult

INSERT_ATTEMPTS = 3
_DATETIME_KEYS = {"start", "end", "exported_at", "frame_time", "inserted_at"}


@dataclass(frozen=True)
class Batch:
    table: str
    token: str
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class PersistResult:
    inserted: int
    outboxed: int


def _logger():
    """The run's logger inside a flow or task, a plain one when called directly (`task.fn`)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("nvrflow.persist")


def outbox_dir() -> Path:
    path = data_dir() / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _encode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()} for row in rows]


def _decode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: datetime.fromisoformat(v) if k in _DATETIME_KEYS else v for k, v in row.items()} for row in rows
    ]


def write_outbox(batch: Batch, folder: Path) -> Path:
    """Write the batch so that it survives a crash: temp file, fsync, rename, fsync the folder."""
    name = hashlib.sha256(f"{batch.table}\0{batch.token}".encode()).hexdigest()[:32] + ".json"
    final = folder / name
    tmp = folder / f".{name}.tmp"
    payload = json.dumps({"table": batch.table, "token": batch.token, "rows": _encode(batch.rows)})
    with open(tmp, "w") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def read_outbox(path: Path) -> Batch:
    raw = json.loads(path.read_text())
    return Batch(raw["table"], raw["token"], _decode(raw["rows"]))


def insert_batches(sink: ClickHouseSink, batches: list[Batch], attempts: int = INSERT_ATTEMPTS) -> None:
    """Insert every batch, retrying with backoff; raises ClickHouseUnavailable if it never gets through."""
    for attempt in range(1, attempts + 1):
        try:
            with sink.connect() as writer:
                for batch in batches:
                    writer.insert(batch.table, batch.rows, batch.token)
            return
        except ClickHouseUnavailable:
            if attempt == attempts:
                raise
            time.sleep(min(2 ** (attempt - 1), 8))


def persist_batches(sink: ClickHouseSink, batches: list[Batch], folder: Path | None = None) -> PersistResult:
    rows = sum(len(b.rows) for b in batches)
    try:
        insert_batches(sink, batches)
        return PersistResult(inserted=rows, outboxed=0)
    except ClickHouseUnavailable as exc:
        target = folder or outbox_dir()
        for batch in batches:
            write_outbox(batch, target)
        _logger().warning(f"{exc}; {rows} rows kept in the outbox {target}, flush-outbox will send them")
        return PersistResult(inserted=0, outboxed=rows)


@dataclass(frozen=True)
class SegmentKey:
    """Where a segment's rows belong, and the natural key its deduplication tokens come from."""

    recorder: str
    site: str
    channel: int
    segment: str
    start: datetime
    end: datetime
    bytes: int
    token_key: str


def batches_for(
    key: SegmentKey,
    transcoded: TranscodeResult,
    classification: Classification,
    flow_run_id: str,
    now: datetime | None = None,
) -> list[Batch]:
    """The rows of one segment; tokens come from natural keys, so every re-run sends the same tokens."""
    now = now or datetime.now(UTC)
    segment = {
        "recorder": key.recorder, "site": key.site, "channel": key.channel, "segment": key.segment,
        "start": key.start, "end": key.end, "duration_s": transcoded.duration_s, "bytes": key.bytes,
        "source_codec": transcoded.source_codec, "transcode_mode": transcoded.mode,
        "output_path": str(transcoded.output), "flow_run_id": flow_run_id, "exported_at": now,
    }  # fmt: skip
    detections = [
        {
            "recorder": key.recorder,
            "channel": key.channel,
            "segment": key.segment,
            "frame_time": d.frame_time,
            "model": classification.model,
            "model_version": classification.model_version,
            "rank": d.rank,
            "label": d.label,
            "score": d.score,
            "inserted_at": now,
        }  # fmt: skip
        for d in classification.detections
    ]
    model_key = f"{classification.model}/{classification.model_version}"
    return [
        Batch("segments", f"segments/{key.token_key}", [segment]),
        Batch("detections", f"detections/{key.token_key}/{model_key}", detections),
    ]


def segment_batches(
    rec: Recording,
    transcoded: TranscodeResult,
    classification: Classification,
    site: str,
    flow_run_id: str,
    now: datetime | None = None,
) -> list[Batch]:
    """The rows of one recorder segment, keyed by recorder, channel, segment name and size."""
    key = SegmentKey(
        rec.recorder, site, rec.channel, rec.name, rec.start, rec.end, rec.size,
        token_key=f"{rec.recorder}/{rec.channel}/{rec.name}/{rec.size}",
    )  # fmt: skip
    return batches_for(key, transcoded, classification, flow_run_id, now)


@task(name="persist", task_run_name="persist {label}", retries=1, retry_delay_seconds=5)
def persist_segment(
    rec: Recording,
    transcoded: TranscodeResult,
    classification: Classification,
    label: str,
    site: str,
    flow_run_id: str,
    sink_block: str = DEFAULT_SINK_BLOCK,
) -> PersistResult:
    batches = segment_batches(rec, transcoded, classification, site, flow_run_id)
    return persist_batches(ClickHouseSink.load(sink_block), batches)


def flush_files(sink: ClickHouseSink, folder: Path) -> tuple[int, int]:
    """Send every outbox file; delete each only after its insert was acknowledged."""
    sent = remaining = 0
    for path in sorted(folder.glob("*.json")):
        batch = read_outbox(path)
        try:
            insert_batches(sink, [batch], attempts=1)
        except ClickHouseUnavailable:
            remaining += 1
            continue
        path.unlink()
        sent += 1
    return sent, remaining


@flow(name="flush-outbox")
def flush_outbox(sink_block: str = DEFAULT_SINK_BLOCK) -> dict[str, int]:
    sent, remaining = flush_files(ClickHouseSink.load(sink_block), outbox_dir())
    logger = get_run_logger()
    logger.info(f"outbox: {sent} batches sent, {remaining} still waiting")
    if remaining:
        raise ClickHouseUnavailable(f"{remaining} outbox batches could not be sent; they stay on disk")
    return {"sent": sent, "remaining": remaining}
