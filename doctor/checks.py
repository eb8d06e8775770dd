"""The checks `python -m doctor` runs; each says what it saw and, when it fails, how to fix it.

No check raises: an unreachable service, a refused password or a missing tool is a failed
check with the service's own words. Secrets never appear in what a check says.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from blocks.clickhouse import ClickHouseSink
from blocks.clickhouse_schema import MIGRATIONS
from blocks.model_server import TFServingModel
from blocks.recorder import HikvisionRecorder
from blocks.video_store import VideoStore
from core.errors import ServiceError
from core.retention import GB
from core.settings import data_dir

TOOL_TIMEOUT_S = 20
MAX_CLOCK_OFFSET_S = 60.0
MIN_FREE_BYTES = 5 * 2**30
STORE_WARN_SHARE = 0.9  # of the store's budget


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # passed, but needs attention soon (the fix says what to do)


def guarded(name: str, fix: str, run: Callable[[], Check]) -> Check:
    """Run one check; any error becomes a failed check naming the error, never a crash."""
    try:
        return run()
    except ServiceError as exc:
        return Check(name, False, str(exc), fix)
    except Exception as exc:  # a check must report, whatever broke
        return Check(name, False, f"{type(exc).__name__}: {exc}", fix)


def prefect_api() -> Check:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return Check("Prefect API", False, "PREFECT_API_URL is not set",
                     "export PREFECT_API_URL=http://<server>:4200/api (and PREFECT_API_AUTH_STRING if the server has auth)")  # fmt: skip
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
        if failure is not None:
            return Check("Prefect API", False, f"{url}: {type(failure).__name__}: {failure}",
                         "start the Prefect server, or fix PREFECT_API_URL / PREFECT_API_AUTH_STRING")  # fmt: skip
        version = client.api_version()
    return Check("Prefect API", True, f"{url}, server {version}")


def work_pool(pool: str) -> Check:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_work_pool(pool)
        queues = client.read_work_queues(work_pool_name=pool)
        workers = client.read_workers_for_work_pool(pool)
    names = ", ".join(f"{q.name} (priority {q.priority})" for q in sorted(queues, key=lambda q: q.priority))
    online = [w.name for w in workers if str(w.status).upper().endswith("ONLINE")]
    detail = f"{pool}: {found.type}, queues {names or 'none'}, {len(online)} worker(s) online"
    if found.is_paused:
        return Check(f"work pool {pool}", False, detail + ", PAUSED", f"prefect work-pool resume {pool}")
    return Check(f"work pool {pool}", True, detail)


def recorder(name: str, block: HikvisionRecorder) -> Check:
    """Reachable, credentials accepted, clock within MAX_CLOCK_OFFSET_S, channels as the block says."""
    with block.connect() as client:
        info = client.device_info()
        clock = client.clock()
        read_at = datetime.now(UTC)
        channels = client.channels()
    offset = (clock.local_time - read_at).total_seconds()
    model = info.get("model") or info.get("deviceName") or "device"
    problems = []
    if abs(offset) > MAX_CLOCK_OFFSET_S:
        problems.append(f"clock {offset:+.0f} s off UTC (zone {clock.timezone})")
    absent = sorted(set(block.channels) - set(channels))
    if absent:
        problems.append(f"channels {absent} of the block not on the device (it has {channels})")
    detail = (
        f"{model} firmware {info.get('firmwareVersion', '?')}, clock {offset:+.1f} s, channels {channels}"
    )
    if problems:
        return Check(f"recorder {name}", False, detail + ": " + "; ".join(problems),
                     "set the recorder's time (NTP) / fix `channels` in the inventory and run sync-inventory")  # fmt: skip
    return Check(f"recorder {name}", True, detail)


def clickhouse(block_name: str, sink: ClickHouseSink) -> Check:
    with sink.connect() as ch:
        version = ch.schema_version()
    latest = MIGRATIONS[-1].version
    detail = f"{sink.url} database {sink.database}, schema version {version} of {latest}"
    if version < latest:
        return Check("ClickHouse", False, detail, f"python -m flows.migrate --sink-block {block_name}")
    return Check("ClickHouse", True, detail)


def model_server(model: TFServingModel) -> Check:
    with model.connect() as client:
        version = client.check_metadata()
    return Check("model server", True, f"{model.model_name} v{version} at {model.target} matches the block")


def tool(command: str) -> Check:
    path = shutil.which(command)
    if path is None:
        return Check(command, False, "not found on PATH", "apt-get install ffmpeg")
    done = subprocess.run(
        [path, "-version"], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )
    first = (done.stdout or done.stderr).splitlines()[:1]
    return Check(command, done.returncode == 0, first[0] if first else f"exit {done.returncode}")


def free_space(minimum: int = MIN_FREE_BYTES) -> Check:
    folder = data_dir()
    free = shutil.disk_usage(folder).free
    detail = f"{folder}: {free / 2**30:.1f} GiB free"
    if free < minimum:
        return Check("data folder", False, detail + f" (under {minimum / 2**30:.0f} GiB)",
                     "free space or point NVRFLOW_DATA at a larger disk")  # fmt: skip
    return Check("data folder", True, detail)


def video_store(block_name: str, store: VideoStore, budget_bytes: int) -> Check:
    """The store's files and bytes against its budget: a warning from STORE_WARN_SHARE of it, a failure past it."""
    use = store.usage()
    share = use.bytes / budget_bytes
    detail = f"{block_name}: {use.files} files, {use.bytes / GB:.2f} GB of {budget_bytes / GB:g} GB budget ({share:.0%})"
    fix = (
        f"run retention (prefect deployment run 'retention/daily', or python -m flows.retention "
        f"--video-store-block {block_name}), or raise the budget (NVRFLOW_STORE_BUDGET_GB on the workers)"
    )
    if share > 1:
        return Check("video store", False, detail + ": over budget", fix)
    if share > STORE_WARN_SHARE:
        return Check("video store", True, detail + f": over {STORE_WARN_SHARE:.0%}", fix, warning=True)
    return Check("video store", True, detail)
