"""Recorder registry: one HikvisionRecorder block and one concurrency limit per recorder; a new
recorder is offered in the pipeline deployment's run form (`flows.run_form`)."""

from __future__ import annotations

from prefect.client.orchestration import get_client

from blocks.loading import block_names, load_block
from blocks.recorder import HikvisionRecorder
from flows.export import limit_name
from flows.run_form import offer_recorders_in_run_form


def upsert_recorder(name: str, recorder: HikvisionRecorder, offer_in_run_form: bool = True) -> list[str]:
    """Create or update the block `name` and the limit `recorder:<name>`; returns what changed.

    A new recorder is also offered in the pipeline deployment's run form (unless
    `offer_in_run_form` is false: sync-inventory offers all of them once, at the end), since
    the server refuses runs for a recorder the form does not list.
    """
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
    if offer_in_run_form and current is None:
        changes += offer_recorders_in_run_form()
    return changes


def _comparable(block: HikvisionRecorder) -> dict:
    """The settings of a block, without the bookkeeping a loaded block carries (document id, name)."""
    data = {name: getattr(block, name) for name in type(block).model_fields if name != "password"}
    data["password"] = block.password.get_secret_value()
    return data


def registered_recorders() -> dict[str, HikvisionRecorder]:
    """Every saved recorder block by name."""
    return {name: load_block(HikvisionRecorder, name) for name in recorder_names()}


def chosen_recorders(names: list[str] | None) -> dict[str, HikvisionRecorder]:
    """The recorders named (every one must exist), or every enabled recorder; by name, sorted."""
    known = registered_recorders()
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise ValueError(f"no recorder block named {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = names or [name for name, block in known.items() if block.enabled]
    return {name: known[name] for name in sorted(chosen)}


def recorder_names() -> list[str]:
    """The names of every saved recorder block, sorted."""
    return block_names(HikvisionRecorder)
