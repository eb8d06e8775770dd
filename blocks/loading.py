"""Loading a saved block in synchronous code, typed as the block it is."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.blocks.core import Block

B = TypeVar("B", bound=Block)


def load_block(block_type: type[B], name: str) -> B:
    """`block_type.load(name)`; Prefect types `load` as "the block or a coroutine" for sync and async callers."""
    return cast(B, block_type.load(name))
