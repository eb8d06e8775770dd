"""Create or update the work pool nvrflow's deployments run on (idempotent).

`python -m work_pools.setup --pool NAME [--concurrency N | --no-concurrency-limit]
[--root DIR] [--data DIR] [--heartbeat SECONDS] [--zombie-window SECONDS] [--no-automations]`
with PREFECT_API_URL (and PREFECT_API_AUTH_STRING where the server wants one) set.

The base job template is `work_pools/process.json` (Prefect's process template), so every
machine's worker starts flow runs the same way. Its `env` default carries what a flow run
needs from the machine: the project root (`NVRFLOW_ROOT`, read by prefect.yaml's pull step),
the data folder (`NVRFLOW_DATA`) and the flow-run heartbeat (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`,
which the crash automations rely on), so no worker needs them in its own environment. It also
fixes glibc's mmap threshold at its default (`MALLOC_MMAP_THRESHOLD_=131072`): left dynamic,
the threshold rises after the first frame batch is freed, and the frame-sized buffers of the
classify stage's threads then stay in per-thread heaps (about 50 MB more peak memory per
flow run in `make bench`'s window).

Only what is asked for changes: without `--concurrency` the pool keeps the limit an operator
set (in the UI or otherwise); an environment variable already in the pool's `env` default is
kept unless its flag is given. Then the crash automations (`work_pools.automations`) are
applied, unless `--no-automations`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound

TEMPLATE = Path(__file__).with_name("process.json")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
QUEUE = "default"

# The `env` keys this setup manages: filled in when missing, changed only when asked for.
ROOT_VAR = "NVRFLOW_ROOT"
DATA_VAR = "NVRFLOW_DATA"
HEARTBEAT_VAR = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
# Prefect 3.8 refuses a heartbeat below 30 s (FlowsSettings.heartbeat_frequency, ge=30).
MIN_HEARTBEAT_S = 30


class _Unset:
    """`--concurrency` not given: the pool's limit stays as it is."""


UNSET = _Unset()


def default_env() -> dict[str, str]:
    """Root and data folder of a machine set up from the README (this checkout); the heartbeat's
    default is in process.json."""
    return {
        ROOT_VAR: str(PROJECT_ROOT),
        DATA_VAR: str(PROJECT_ROOT / "data"),
    }


def _env_default(template: dict[str, Any]) -> dict[str, str]:
    return dict(template.get("variables", {}).get("properties", {}).get("env", {}).get("default") or {})


def job_template(current: dict[str, Any] | None, env: dict[str, str]) -> dict[str, Any]:
    """process.json with its `env` default: the file's, then the pool's current values, then `env`."""
    template = json.loads(TEMPLATE.read_text())
    merged = _env_default(template) | default_env()
    if current:
        merged |= _env_default(current)
    merged |= env
    template["variables"]["properties"]["env"]["default"] = merged
    return template


def ensure_pool(
    name: str, concurrency: int | None | _Unset = UNSET, env: dict[str, str] | None = None
) -> str:
    """Create the pool or bring it up to date; `concurrency=None` removes the limit."""
    env = env or {}
    if HEARTBEAT_VAR in env and int(env[HEARTBEAT_VAR]) < MIN_HEARTBEAT_S:
        raise ValueError(f"{HEARTBEAT_VAR} must be at least {MIN_HEARTBEAT_S} s (Prefect's minimum)")
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=job_template(None, env),
                    concurrency_limit=None if isinstance(concurrency, _Unset) else concurrency,
                )
            )
            _ensure_queue(client, name)
            return f"work pool {name} created"
        template = job_template(pool.base_job_template, env)
        changes: dict[str, Any] = {}
        if pool.base_job_template != template:
            changes["base_job_template"] = copy.deepcopy(template)
        if not isinstance(concurrency, _Unset) and pool.concurrency_limit != concurrency:
            changes["concurrency_limit"] = concurrency
        queue_created = _ensure_queue(client, name)
        if changes:
            # Only the fields set here are sent (exclude_unset): the rest of the pool stays.
            client.update_work_pool(name, WorkPoolUpdate(**changes))
            return f"work pool {name} updated ({', '.join(sorted(changes))})"
        if queue_created:
            return f"work pool {name} updated (queue {QUEUE} created)"
    return f"work pool {name} up to date"


def _ensure_queue(client: SyncPrefectClient, pool: str) -> bool:
    """The deployments' queue (Prefect makes it with the pool; an operator may have removed it)."""
    try:
        client.read_work_queue_by_name(QUEUE, work_pool_name=pool)
        return False
    except ObjectNotFound:
        client.create_work_queue(name=QUEUE, work_pool_name=pool)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", default="nvrflow-local")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--concurrency", type=int, help="flow runs at once across the pool (absent: kept)")
    limit.add_argument("--no-concurrency-limit", action="store_true", help="remove the pool's limit")
    parser.add_argument("--root", help=f"{ROOT_VAR} for flow runs: the project checkout on every worker")
    parser.add_argument("--data", help=f"{DATA_VAR} for flow runs: exports, MP4s, outbox")
    parser.add_argument("--heartbeat", type=int, help=f"{HEARTBEAT_VAR} for flow runs (>= {MIN_HEARTBEAT_S})")
    parser.add_argument(
        "--zombie-window", type=int, help="seconds without a heartbeat before a run is Crashed"
    )
    parser.add_argument("--no-automations", action="store_true", help="leave the crash automations alone")
    args = parser.parse_args(argv)

    concurrency: int | None | _Unset = UNSET
    if args.no_concurrency_limit:
        concurrency = None
    elif args.concurrency is not None:
        concurrency = args.concurrency
    env = {}
    if args.root:
        env[ROOT_VAR] = str(Path(args.root).resolve())
    if args.data:
        env[DATA_VAR] = str(Path(args.data).resolve())
    if args.heartbeat is not None:
        env[HEARTBEAT_VAR] = str(args.heartbeat)
    print(ensure_pool(args.pool, concurrency, env))
    if not args.no_automations:
        from work_pools import automations

        for line in automations.apply(zombie_window_s=args.zombie_window):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
