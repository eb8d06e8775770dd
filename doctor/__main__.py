"""`python -m doctor`: check every connection this machine needs; exit 1 if any check fails.

    python -m doctor [--pool nvrflow-local] [--recorder NAME ...] [--sink-block nvrflow]
                     [--model-block nvrflow] [--video-store-block nvrflow-video] [--min-free-gib 5]

Checks, in order: the Prefect API and its version, the work pool and its queues, each
recorder (reachable, credentials, clock offset, channels against its block), ClickHouse
(credentials, schema version), the model server (metadata against its block), the video
store (its block loads; its files and bytes against NVRFLOW_STORE_BUDGET_GB: a warning over
90 %, a failure over 100 %), ffmpeg/ffprobe, and free space in the data folder. Each failure
says how to fix it; a warning passes.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from blocks.clickhouse import ClickHouseSink
from blocks.loading import load_block
from blocks.model_server import TFServingModel
from blocks.video_store import load_video_store
from core.retention import GB
from core.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK, DEFAULT_VIDEO_STORE_BLOCK, store_budget_gb
from doctor import checks
from doctor.checks import Check, guarded

DEFAULT_POOL = "nvrflow-local"


def run_checks(
    pool: str,
    recorders: list[str] | None,
    sink_block: str,
    model_block: str,
    min_free: int,
    video_store_block: str = DEFAULT_VIDEO_STORE_BLOCK,
) -> list[Check]:
    from flows.recorders import registered_recorders

    found = [guarded("Prefect API", "", checks.prefect_api)]
    if not found[0].ok:
        return found  # every other check reads its settings from the Prefect API
    found.append(
        guarded(
            f"work pool {pool}", f"python -m work_pools.setup --pool {pool}", lambda: checks.work_pool(pool)
        )
    )
    known = registered_recorders()
    names = recorders or sorted(name for name, block in known.items() if block.enabled)
    for name in names:
        if name not in known:
            found.append(Check(f"recorder {name}", False, f"no HikvisionRecorder block named {name}",
                               "add it to the inventory workbook and run sync-inventory"))  # fmt: skip
            continue
        found.append(guarded(f"recorder {name}", "check the address, the user and the password in the inventory",
                             partial(checks.recorder, name, known[name])))  # fmt: skip
    found.append(guarded("ClickHouse", f"check the ClickHouseSink block {sink_block!r} (url, user, password)",
                         lambda: checks.clickhouse(sink_block, load_block(ClickHouseSink, sink_block))))  # fmt: skip
    found.append(guarded("model server", f"check the TFServingModel block {model_block!r} against the served model",
                         lambda: checks.model_server(load_block(TFServingModel, model_block))))  # fmt: skip
    found.append(guarded("video store", f"check the file system block {video_store_block!r} (a LocalFileSystem "
                         "or RemoteFileSystem) and NVRFLOW_STORE_BUDGET_GB",
                         lambda: checks.video_store(video_store_block, load_video_store(video_store_block),
                                                    int(store_budget_gb() * GB))))  # fmt: skip
    found += [
        guarded(tool, "apt-get install ffmpeg", partial(checks.tool, tool)) for tool in ("ffmpeg", "ffprobe")
    ]
    found.append(guarded("data folder", "", lambda: checks.free_space(min_free)))
    return found


def report(found: list[Check]) -> str:
    lines = []
    for check in found:
        status = "FAIL" if not check.ok else "warn" if check.warning else "ok  "
        lines.append(f"{status}  {check.name}: {check.detail}")
        if (not check.ok or check.warning) and check.fix:
            lines.append(f"      fix: {check.fix}")
    failed = sum(not c.ok for c in found)
    warned = sum(c.ok and c.warning for c in found)
    if failed:
        lines.append(f"{len(found) - failed} ok, {failed} failed")
    else:
        lines.append(f"all {len(found)} checks ok" + (f", {warned} with a warning" if warned else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=DEFAULT_POOL, help="work pool this machine's worker serves")
    parser.add_argument(
        "--recorder", action="append", dest="recorders", help="a recorder (repeat); default: all enabled"
    )
    parser.add_argument("--sink-block", default=DEFAULT_SINK_BLOCK)
    parser.add_argument("--model-block", default=DEFAULT_MODEL_BLOCK)
    parser.add_argument("--video-store-block", default=DEFAULT_VIDEO_STORE_BLOCK)
    parser.add_argument("--min-free-gib", type=float, default=checks.MIN_FREE_BYTES / 2**30)
    args = parser.parse_args(argv)
    found = run_checks(
        args.pool,
        args.recorders,
        args.sink_block,
        args.model_block,
        int(args.min_free_gib * 2**30),
        args.video_store_block,
    )
    print(report(found))
    return 0 if all(c.ok for c in found) else 1


if __name__ == "__main__":
    sys.exit(main())
