"""`ingest_video`: one video file from outside the recorders (an upload, a dropped clip).

transcode -> classify -> persist, the same stages as a recorder segment, with the rows
in the same `segments` / `detections` tables: recorder = the source name, channel 0,
segment = `<first 16 hex of the content's sha256>-<file stem>`.

Where the file goes (all under `data_dir()/ingest/`):
- `processing/`: the run first moves the file here, so that nobody changes it under the
  run and a watcher restart does not announce it again;
- `done/`: after its rows were persisted (or kept in the outbox);
- `failed/`: on any failure, next to `<name>.reason.txt` saying why. Nothing is deleted:
  to try again, move the file back into the watched folder or run the deployment on it.

Ingesting the same content again adds no rows: the insert deduplication tokens come
from the source and the content hash, not from the file's name or time.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from blocks.clickhouse import ClickHouseSink
from blocks.model_server import TFServingModel
from flows.classify import Classification, check_model, classify_segment
from flows.media import CorruptMedia
from flows.persist import Batch, PersistResult, SegmentKey, batches_for, persist_batches
from flows.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK, data_dir, mp4_dir
from flows.transcode import TranscodeOptions, TranscodeResult, retry_unless_corrupt, transcode_file

INGEST_CHANNEL = 0
_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_CHUNK = 1 << 20


class IngestFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class IngestFile:
    """What a file is, fixed once at the start of its run."""

    source: str
    name: str
    sha256: str
    size: int
    start: datetime

    @property
    def segment(self) -> str:
        return segment_name(self.sha256, self.name)

    @property
    def label(self) -> str:
        return f"{self.source} {self.segment}"


def ingest_dir(kind: str) -> Path:
    """`processing`, `done` or `failed` under `data_dir()/ingest/`."""
    path = data_dir() / "ingest" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_source(source: str) -> str:
    # The source names a folder under mp4/ and a `recorder` value: no paths, no surprises.
    if not _SOURCE_RE.match(source or ""):
        raise ValueError(
            f"source {source!r}: use 1-64 letters, digits, '.', '_' or '-', not starting with a symbol"
        )
    return source


def content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def segment_name(sha256: str, file_name: str) -> str:
    stem = _UNSAFE.sub("_", Path(file_name).stem).strip("._")[:80] or "video"
    return f"{sha256[:16]}-{stem}"


def describe_file(path: Path, source: str, start: datetime | None = None) -> IngestFile:
    """Hash and date a file; without `start`, its modification time stands for the recording's start."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (already ingested by another run?)")
    if start is None:
        start = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    elif start.tzinfo is None:
        raise ValueError("start needs a time zone (e.g. 2026-11-01T10:00:00Z)")
    return IngestFile(
        check_source(source), path.name, content_sha256(path), path.stat().st_size, start.astimezone(UTC)
    )


def mp4_path(item: IngestFile) -> Path:
    """mp4/<source>/<start date, UTC>/<segment>.mp4"""
    return mp4_dir() / item.source / f"{item.start:%Y-%m-%d}" / f"{item.segment}.mp4"


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


def failure_reason(original: Path, item: IngestFile | None, exc: BaseException) -> str:
    permanent = isinstance(exc, CorruptMedia | ValueError)
    lines = [
        f"file: {original}",
        f"failed at: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"flow run: {flow_run.id or '-'}",
    ]
    if item is not None:
        lines += [f"source: {item.source}", f"sha256: {item.sha256}", f"bytes: {item.size}"]
    lines += [
        f"error: {type(exc).__name__}: {exc}",
        "",
        "The file is not usable as video; fix or replace it."
        if permanent
        else "This may be transient (a service down): move the file back into the watched folder to try again.",
    ]
    if not permanent:
        lines += ["", "".join(traceback.format_exception_only(exc)).strip()]
    return "\n".join(lines) + "\n"


def file_batches(
    item: IngestFile,
    transcoded: TranscodeResult,
    classification: Classification,
    flow_run_id: str,
    now: datetime | None = None,
) -> list[Batch]:
    """The rows of one ingested file; tokens come from the source and content hash only."""
    end = item.start + timedelta(seconds=transcoded.duration_s)
    key = SegmentKey(
        item.source, item.source, INGEST_CHANNEL, item.segment, item.start, end, item.size,
        token_key=f"ingest/{item.source}/{item.sha256}",
    )  # fmt: skip
    return batches_for(key, transcoded, classification, flow_run_id, now)


@task(
    name="transcode",
    task_run_name="transcode {label}",
    retries=1,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_unless_corrupt,
)
def transcode_upload(src: Path, dst: Path, label: str, options: TranscodeOptions) -> TranscodeResult:
    # transcode_file keeps an existing verified output, so a repeat costs one probe.
    return transcode_file(src, dst, options)


@task(name="persist", task_run_name="persist {label}", retries=1, retry_delay_seconds=5)
def persist_upload(
    item: IngestFile,
    transcoded: TranscodeResult,
    classification: Classification,
    label: str,
    flow_run_id: str,
    sink_block: str = DEFAULT_SINK_BLOCK,
) -> PersistResult:
    batches = file_batches(item, transcoded, classification, flow_run_id)
    return persist_batches(ClickHouseSink.load(sink_block), batches)


@flow(name="ingest-video", log_prints=True)
def ingest_video(
    path: str,
    source: str = "upload",
    start: datetime | None = None,
    transcode: TranscodeOptions | None = None,
    sample_fps: float = 1.0,
    model_block: str = DEFAULT_MODEL_BLOCK,
    sink_block: str = DEFAULT_SINK_BLOCK,
) -> dict[str, Any]:
    """Transcode, classify and persist one video file; it ends in ingest/done/ or ingest/failed/.

    `path` must be reachable from the worker. Without `start`, the file's modification time (UTC).
    """
    logger = get_run_logger()
    original = Path(path)
    check_source(source)
    working = claim(original)
    item: IngestFile | None = None
    try:
        item = describe_file(working, source, start)
        model = TFServingModel.load(model_block)
        version = check_model(model)
        transcoded = transcode_upload(working, mp4_path(item), item.label, transcode or TranscodeOptions())
        classification = classify_segment(transcoded, item.start, item.label, model, version, sample_fps)
        persisted = persist_upload(
            item, transcoded, classification, item.label, str(flow_run.id or ""), sink_block
        )
    except BaseException as exc:
        kept = set_aside(working, failure_reason(original, item, exc))
        logger.error(f"{original.name}: {type(exc).__name__}: {exc}; kept as {kept}")
        raise
    done = move_into(working, ingest_dir("done"))
    logger.info(
        f"{original.name}: {classification.frames} frames, {persisted.inserted} rows inserted, "
        f"{persisted.outboxed} in the outbox; output {transcoded.output}; source kept as {done}"
    )
    return {
        "source": item.source,
        "segment": item.segment,
        "sha256": item.sha256,
        "output": str(transcoded.output),
        "mode": transcoded.mode,
        "frames": classification.frames,
        "inserted": persisted.inserted,
        "outboxed": persisted.outboxed,
        "kept_as": str(done),
    }
