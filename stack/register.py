"""Register the stack in Prefect: the stack's blocks, recorder limits, the schema; then the
recorders' schedules and the run form.

    python -m stack.register                  # before `prefect deploy`: blocks, limits, schema
    python -m stack.register --after-deploy   # after it: schedules, recorders in the run form

`prefect deploy` writes the parameter schemas afresh, so the run forms' rules (the list of
recorders, whole windows) are applied again after every deploy (`flows.run_form`).

Run by `python -m stack up` with the stack's environment; idempotent.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.filesystems import LocalFileSystem
from pydantic import SecretStr

from blocks.clickhouse import ClickHouseSink
from blocks.recorder import HikvisionRecorder
from core.settings import DEFAULT_SINK_BLOCK, DEFAULT_VIDEO_STORE_BLOCK
from flows.recorders import upsert_recorder
from flows.run_form import shape_run_forms
from flows.schedules import ensure_recorder_schedule
from stack.models import model_blocks
from stack.state import StackState, load_state


def before_deploy(state: StackState, spec: dict) -> None:
    sink = ClickHouseSink(url=state.clickhouse_url, password=SecretStr(state.clickhouse_password))
    sink.save(DEFAULT_SINK_BLOCK, overwrite=True)
    with sink.connect() as writer:
        applied = writer.migrate()
    print(f"ClickHouse schema: {', '.join(applied) if applied else 'up to date'}")

    for name, model in model_blocks(state.model_target).items():
        model.save(name, overwrite=True)
    store = state.data_dir / "store"
    store.mkdir(parents=True, exist_ok=True)
    LocalFileSystem(basepath=str(store)).save(DEFAULT_VIDEO_STORE_BLOCK, overwrite=True)

    for rec in spec["recorders"]:
        block = HikvisionRecorder(
            host="127.0.0.1",
            port=rec["port"],
            username=rec["username"],
            password=SecretStr(rec["password"]),
            channels=[c["id"] for c in rec["channels"]],
            max_concurrent_downloads=2,
            site=rec.get("site", "simulated"),
        )
        for change in upsert_recorder(rec["name"], block):
            print(change)


def after_deploy(spec: dict) -> None:
    """Each simulated recorder's own schedule and the run form's recorder list; with
    NVRFLOW_SCHEDULES=off, every schedule paused.

    The test session sets NVRFLOW_SCHEDULES=off: tests decide what runs when, and a cron run
    landing in the middle of a test would change what it counts.
    """
    for change in shape_run_forms():  # first: each recorder's deployment copies the pipeline's form
        print(change)
    for rec in spec["recorders"]:
        for change in ensure_recorder_schedule(rec["name"], site=rec.get("site", "simulated")):
            print(change)
    if os.environ.get("NVRFLOW_SCHEDULES") == "off":
        with get_client(sync_client=True) as client:
            for deployment in client.read_deployments():
                for schedule in deployment.schedules:
                    if schedule.active:
                        client.update_deployment_schedule(deployment.id, schedule.id, active=False)
        print("schedules paused (NVRFLOW_SCHEDULES=off)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    state = load_state()
    if state is None:
        print("no stack state: start the stack with `python -m stack up`", file=sys.stderr)
        return 1
    spec = json.loads(Path(state.data_dir / "stack" / "simulator.json").read_text())
    if args == ["--after-deploy"]:
        after_deploy(spec)
    else:
        before_deploy(state, spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
