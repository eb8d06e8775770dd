"""Loading a saved block in synchronous code, typed as the block it is."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.blocks.core import Block

B = TypeVar("B", bound=Block)


def load_block(block_type: type[B], name: str) -> B:
    """`block_type.load(name)`; Prefect types `load` as "the block or a coroutine" for sync and async callers."""
    return cast(B, block_type.load(name))


def block_names(block_type: type[Block]) -> list[str]:
    """The names of every saved block of this type, sorted (read page by page: the API caps a page)."""
    from prefect.client.orchestration import get_client

    names: list[str] = []
    page = 200
    with get_client(sync_client=True) as client:
        while True:
            docs = client.read_block_documents_by_type(
                block_type.get_block_type_slug(), offset=len(names), limit=page, include_secrets=False
            )
            names += [doc.name or "" for doc in docs]
            if len(docs) < page:
                break
    return sorted(n for n in names if n)
