"""`retention`: keep the video store within its age and disk budget, and the exports folder small.

    python -m flows.retention [--keep-days 30] [--budget-gb 50] [--exports-keep-hours 24]

Deletes, never a file whose rows are not in ClickHouse (`core.retention` decides, from the
files and the rows):
- this machine's exports (the recorders' downloads) a while after their segment was persisted;
- clips and thumbnails older than keep_days, then the oldest ones while the store is over budget.
Every deletion gets a row in `deletions` (through the outbox when ClickHouse went away after
the reads), and the run a table artifact. When ClickHouse cannot be read, nothing is deleted and
the run fails. Exports live on each worker's disk: with several machines, run it on each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from blocks.clickhouse import Batch, ClickHouseSink
from blocks.clickhouse_schema import DeletionRow
from blocks.loading import load_block
from blocks.video_store import VideoStore, load_video_store
from core.errors import ServiceError
from core.retention import (
    GB,
    Deletion,
    ExportFile,
    oldest_day,
    persisted_files,
    plan_exports,
    plan_store,
    store_kind,
    summary_rows,
)
from core.settings import (
    DEFAULT_SINK_BLOCK,
    DEFAULT_VIDEO_STORE_BLOCK,
    exports_dir,
    store_budget_gb,
    store_keep_days,
)
from flows import retry_policy
from flows.persist import PersistResult, persist_batches

DEFAULT_EXPORTS_KEEP_HOURS = 24.0


class RetentionBlocked(RuntimeError):
    """Retention could not learn which files' rows are persisted, so it deleted nothing."""


@dataclass(frozen=True)
class Done:
    """A deletion that happened, and when."""

    deletion: Deletion
    at: datetime


def export_files(root: Path) -> list[ExportFile]:
    """Every `.ps` file under the exports folder, keyed by its path relative to it."""
    found = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if not name.endswith(".ps"):
                continue
            path = Path(folder) / name
            try:
                stat = path.lstat()
            except FileNotFoundError:  # deleted while listed
                continue
            if path.is_symlink():
                continue
            found.append(
                ExportFile(
                    path.relative_to(root).as_posix(),
                    stat.st_size,
                    datetime.fromtimestamp(stat.st_mtime, UTC),
                )
            )
    return found


@task(name="read persisted rows", cache_policy=NO_CACHE, **retry_policy.CLICKHOUSE)
def read_persisted(sink: ClickHouseSink, since: datetime | None) -> tuple[set[str], dict[str, datetime]]:
    """Store keys whose rows are in ClickHouse, and when each export's segment was persisted."""
    with sink.connect() as ch:
        return persisted_files(ch.persisted_segments(since), ch.thumbnails_named(since))


@task(name="delete files", cache_policy=NO_CACHE)
def delete_files(
    store: VideoStore, exports_root: Path, chosen: list[Deletion]
) -> tuple[list[Done], list[str]]:
    """Delete what was chosen; returns what went, and a message for each file that could not."""
    logger = get_run_logger()
    done: list[Done] = []
    failed: list[str] = []
    for deletion in chosen:
        try:
            if deletion.what == "export":
                path = exports_root / deletion.key
                path.unlink(missing_ok=True)
                _prune_empty(path.parent, exports_root)
            else:
                store.delete(deletion.key)
        except (OSError, ValueError) as exc:
            failed.append(f"{deletion.what} {deletion.key}: {exc}")
            continue
        done.append(Done(deletion, datetime.now(UTC)))
        logger.debug(f"deleted {deletion.what} {deletion.key} ({deletion.size} bytes, {deletion.reason})")
    return done, failed


def _prune_empty(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to `root` while they are empty (a day's exports gone)."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        folder = folder.parent


def deletion_batch(done: list[Done], exports_root: Path, host: str, flow_run_id: str) -> Batch:
    """The rows of what went, under a token made of them: a retried insert adds nothing."""
    rows = tuple(
        DeletionRow(
            what=d.deletion.what,
            key=str(exports_root / d.deletion.key) if d.deletion.what == "export" else d.deletion.key,
            bytes=d.deletion.size,
            reason=d.deletion.reason,
            deleted_at=d.at,
            host=host,
            flow_run_id=flow_run_id,
        )
        for d in done
    )
    digest = hashlib.sha256(
        "\n".join(f"{r.what}\0{r.key}\0{r.deleted_at.isoformat()}" for r in rows).encode()
    )
    return Batch(DeletionRow.TABLE, f"deletions/{flow_run_id}/{digest.hexdigest()[:32]}", rows)


@task(name="record deletions", cache_policy=NO_CACHE, **retry_policy.CLICKHOUSE)
def record_deletions(sink: ClickHouseSink, batch: Batch) -> PersistResult:
    """Insert the deletions' rows (kept in the outbox when ClickHouse is unreachable)."""
    return persist_batches(sink, [batch])


@flow(name="retention")
def retention(
    keep_days: float | None = Field(default=None, gt=0),
    budget_gb: float | None = Field(default=None, gt=0),
    exports_keep_hours: float = Field(default=DEFAULT_EXPORTS_KEEP_HOURS, ge=0),
    video_store_block: str = DEFAULT_VIDEO_STORE_BLOCK,
    sink_block: str = DEFAULT_SINK_BLOCK,
) -> dict[str, Any]:
    """Delete old clips, thumbnails and exports, never one whose rows are not in ClickHouse.

    Args:
        keep_days: Days clips and thumbnails are kept (by when they were stored), budget permitting;
            empty: the setting NVRFLOW_STORE_KEEP_DAYS (30).
        budget_gb: The video store's size limit in GB (10^9 bytes): past it, the oldest clips and
            thumbnails go first; empty: the setting NVRFLOW_STORE_BUDGET_GB (50).
        exports_keep_hours: Hours a recorder's download is kept on this machine once its segment
            is persisted (0: at once). One whose segment is not persisted stays.
        video_store_block: Name of the file system block of the video store.
        sink_block: Name of the ClickHouseSink block that holds the rows and the deletions.
    """
    logger = get_run_logger()
    keep = keep_days if keep_days is not None else store_keep_days()
    budget = int((budget_gb if budget_gb is not None else store_budget_gb()) * GB)
    sink = load_block(ClickHouseSink, sink_block)
    store = load_video_store(video_store_block)
    exports_root = exports_dir()
    entries = list(store.entries())
    exports = export_files(exports_root)
    ours = [e.key for e in entries if store_kind(e.key)] + [f.key for f in exports]
    now = datetime.now(UTC)
    persisted_store: set[str] = set()
    persisted_exports: dict[str, datetime] = {}
    if ours:
        try:
            persisted_store, persisted_exports = read_persisted(sink, oldest_day(ours))
        except ServiceError as exc:
            raise RetentionBlocked(
                f"nothing deleted: retention deletes only files whose rows are in ClickHouse, "
                f"and they could not be read ({exc})"
            ) from exc
    plan = plan_store(entries, persisted_store, now, keep, budget)
    chosen = plan.deletions + plan_exports(exports, persisted_exports, now, exports_keep_hours)
    done, failed = delete_files(store, exports_root, chosen) if chosen else ([], [])
    if done:
        record_deletions(
            sink, deletion_batch(done, exports_root, socket.gethostname(), str(flow_run.id or ""))
        )

    went = [d.deletion for d in done]
    store_after = plan.bytes_before - sum(d.size for d in went if d.what != "export")
    use = f"store {video_store_block}: {store_after / GB:.3f} of {budget / GB:g} GB after retention"
    for row in summary_rows(went):
        logger.info(f"deleted {row['files']} {row['what']} files ({row['MB']} MB): {row['reason']}")
    logger.info(f"{use} ({plan.bytes_before / GB:.3f} GB before); {len(went)} files deleted")
    if plan.unpersisted:
        logger.info(
            f"{plan.unpersisted} clips and thumbnails kept whatever their age: their rows are not persisted"
        )
    if plan.over_budget:
        logger.warning(
            f"store {video_store_block} stays {plan.over_budget / GB:.3f} GB over its budget: what is left "
            "is not persisted yet (flush-outbox) or not retention's to delete; raise budget_gb or free space"
        )
    create_table_artifact(
        summary_rows(went) or [{"what": "-", "reason": "-", "files": 0, "MB": 0}],
        key="retention",
        description=f"files deleted; {use}",
    )
    if failed:
        raise OSError(f"{len(failed)} files could not be deleted, e.g. {failed[0]}")
    return {
        "deleted": len(went),
        "bytes": sum(d.size for d in went),
        "store_bytes": store_after,
        "budget_bytes": budget,
        "over_budget_bytes": plan.over_budget,
        "unpersisted": plan.unpersisted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retention", description=__doc__.splitlines()[0])
    parser.add_argument("--keep-days", type=float, help="default: NVRFLOW_STORE_KEEP_DAYS")
    parser.add_argument("--budget-gb", type=float, help="default: NVRFLOW_STORE_BUDGET_GB")
    parser.add_argument("--exports-keep-hours", type=float, default=DEFAULT_EXPORTS_KEEP_HOURS)
    parser.add_argument("--video-store-block", default=DEFAULT_VIDEO_STORE_BLOCK)
    parser.add_argument("--sink-block", default=DEFAULT_SINK_BLOCK)
    args = parser.parse_args(argv)
    try:
        result = retention(
            args.keep_days, args.budget_gb, args.exports_keep_hours, args.video_store_block, args.sink_block
        )
    except RetentionBlocked as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result['deleted']} files deleted, {result['bytes']} bytes; store at {result['store_bytes']} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
