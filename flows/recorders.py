"""Recorder registry: one HikvisionRecorder block and one concurrency limit per recorder."""

from __future__ import annotations

from prefect.client.orchestration import get_client

from blocks.loading import load_block
from blocks.recorder import HikvisionRecorder
from flows.export import limit_name


def upsert_recorder(name: str, recorder: HikvisionRecorder) -> list[str]:
    """Create or update the block `name` and the limit `recorder:<name>`; returns what changed."""
    changes = []
    try:
        current = load_block(HikvisionRecorder, name)
    except ValueError:
        current = None
    if current is None:
        changes.append(f"{name}: block created")
    elif _comparable(current) != _comparable(recorder):
        changes.append(f"{name}: block updated")
    if current is None or _comparable(current) != _comparable(recorder):
        recorder.save(name, overwrite=True)
    with get_client(sync_client=True) as client:
        limit = recorder.max_concurrent_downloads
        try:
            before = client.read_global_concurrency_limit_by_name(limit_name(name)).limit
        except Exception:
            before = None
        if before != limit:
            client.upsert_global_concurrency_limit_by_name(limit_name(name), limit)
            changes.append(f"{limit_name(name)}: limit {before} -> {limit}")
    return changes


def _comparable(block: HikvisionRecorder) -> dict:
    """The settings of a block, without the bookkeeping a loaded block carries (document id, name)."""
    data = {name: getattr(block, name) for name in type(block).model_fields if name != "password"}
    data["password"] = block.password.get_secret_value()
    return data


def registered_recorders() -> dict[str, HikvisionRecorder]:
    """Every saved recorder block by name."""
    with get_client(sync_client=True) as client:
        docs = client.read_block_documents_by_type(
            HikvisionRecorder.get_block_type_slug(), include_secrets=False
        )
    return {doc.name: load_block(HikvisionRecorder, doc.name) for doc in docs if doc.name}
