"""Helpers shared by the tests that use the session's stack."""

from __future__ import annotations

from blocks.clickhouse import ClickHouseSink, ClickHouseWriter
from core.settings import DEFAULT_SINK_BLOCK
from stack.simulator.spec import load_spec
from stack.state import StackState


def stack_clickhouse() -> ClickHouseWriter:
    """A connection to the stack's ClickHouse, through the block every flow uses."""
    return ClickHouseSink.load(DEFAULT_SINK_BLOCK).connect()


def recorder_port(stack: StackState, name: str) -> int:
    """The port of the stack's simulated recorder `name`."""
    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    return next(r.port for r in spec.recorders if r.name == name)
