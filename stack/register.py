"""Register the stack in Prefect: the stack's blocks, recorder limits, the schema, the run form.

Run by `python -m stack up` with the stack's environment; idempotent. `prefect deploy` writes
the pipeline's parameter schema afresh, so after a deploy `python -m stack.register --run-form`
offers the recorders in the run form again (that step alone).
"""

from __future__ import annotations

import json
import sys

from pydantic import SecretStr

from blocks.clickhouse import ClickHouseSink
from blocks.model_server import TFServingModel
from blocks.recorder import HikvisionRecorder
from core.settings import DEFAULT_MODEL_BLOCK, DEFAULT_SINK_BLOCK
from flows.recorders import offer_recorders_in_run_form, upsert_recorder
from stack import model_build
from stack.state import load_state


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--run-form"]:
        for change in offer_recorders_in_run_form():
            print(change)
        return 0
    if args:
        print("usage: python -m stack.register [--run-form]", file=sys.stderr)
        return 2
    state = load_state()
    if state is None:
        print("no stack state: start the stack with `python -m stack up`", file=sys.stderr)
        return 1
    sink = ClickHouseSink(url=state.clickhouse_url, password=SecretStr(state.clickhouse_password))
    sink.save(DEFAULT_SINK_BLOCK, overwrite=True)
    with sink.connect() as writer:
        applied = writer.migrate()
    print(f"ClickHouse schema: {', '.join(applied) if applied else 'up to date'}")

    TFServingModel(
        target=state.model_target,
        model_name=model_build.MODEL_NAME,
        labels=model_build.labels(),
    ).save(DEFAULT_MODEL_BLOCK, overwrite=True)

    spec = json.loads((state.data_dir / "stack" / "simulator.json").read_text())
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
    for change in offer_recorders_in_run_form():
        print(change)
    return 0


if __name__ == "__main__":
    sys.exit(main())
