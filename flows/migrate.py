"""`migrate`: bring the ClickHouse schema of a sink up to date.

    python -m flows.migrate [--sink-block nvrflow]

Applies the migrations of `blocks.clickhouse_schema` not applied yet, in order, and prints
their names; a second run applies nothing. Migrations only add, so this is safe to run
at any time the pipeline is not writing (the stack runs it before its worker starts).
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger

from blocks.clickhouse import ClickHouseSink, ClickHouseUnavailable
from blocks.loading import load_block
from core.settings import DEFAULT_SINK_BLOCK


@flow(name="migrate")
def migrate(sink_block: str = DEFAULT_SINK_BLOCK) -> list[str]:
    """Apply the pending migrations to the sink block's database; returns the names applied."""
    sink = load_block(ClickHouseSink, sink_block)
    with sink.connect() as writer:
        applied = writer.migrate()
    logger = get_run_logger()
    if applied:
        logger.info(f"{sink.database}: applied {', '.join(applied)}")
    else:
        logger.info(f"{sink.database}: schema up to date")
    return applied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--sink-block", default=DEFAULT_SINK_BLOCK, help="ClickHouseSink block name")
    args = parser.parse_args(argv)
    try:
        applied = migrate(args.sink_block)
    except ClickHouseUnavailable as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    print(
        "\n".join(f"applied: {name}" for name in applied) if applied else "schema up to date: nothing applied"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
