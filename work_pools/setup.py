"""Create or update the work pool nvrflow's deployments run on (idempotent).

`python -m work_pools.setup --pool NAME [--concurrency N]` with PREFECT_API_URL set.
The base job template is `work_pools/process.json` (Prefect's process template), so
every machine's worker starts flow runs the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound

TEMPLATE = Path(__file__).with_name("process.json")


def ensure_pool(name: str, concurrency: int | None) -> str:
    template = json.loads(TEMPLATE.read_text())
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name, type="process", base_job_template=template, concurrency_limit=concurrency
                )
            )
            return f"work pool {name} created"
        if pool.base_job_template != template or pool.concurrency_limit != concurrency:
            client.update_work_pool(
                name, WorkPoolUpdate(base_job_template=template, concurrency_limit=concurrency)
            )
            return f"work pool {name} updated"
    return f"work pool {name} up to date"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pool", default="nvrflow-local")
    parser.add_argument("--concurrency", type=int, default=None, help="flow runs at once across the pool")
    args = parser.parse_args(argv)
    print(ensure_pool(args.pool, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
