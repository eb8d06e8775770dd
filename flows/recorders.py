"""Recorder registry: one HikvisionRecorder block and one concurrency limit per recorder, and the
pipeline deployment's run form offering exactly the known recorders."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import MissingContextError, ObjectNotFound
from prefect.logging import get_logger

from blocks.loading import load_block
from blocks.recorder import HikvisionRecorder
from flows.export import limit_name


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


def recorder_names() -> list[str]:
    """The names of every saved recorder block, sorted (read page by page: the API caps a page)."""
    names: list[str] = []
    page = 200
    with get_client(sync_client=True) as client:
        while True:
            docs = client.read_block_documents_by_type(
                HikvisionRecorder.get_block_type_slug(), offset=len(names), limit=page, include_secrets=False
            )
            names += [doc.name or "" for doc in docs]
            if len(docs) < page:
                break
    return sorted(n for n in names if n)


PIPELINE_DEPLOYMENT = "recorder-pipeline/recorder"


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("nvrflow.recorders")


def offer_recorders_in_run_form(
    names: Iterable[str] | None = None, deployment: str = PIPELINE_DEPLOYMENT
) -> list[str]:
    """Make the deployment's `recorder` parameter a choice of the known recorders; returns what changed.

    The parameter's schema becomes an `enum` of `names` (default: every recorder block, sorted),
    its title and description kept, so the run form offers a dropdown and the server (which
    enforces the schema) refuses a run for any other name. Idempotent. `prefect deploy` writes
    the function's own schema again, so run this after every deploy. A missing deployment is
    skipped with a log line.
    """
    known = sorted(set(recorder_names() if names is None else names))
    with get_client(sync_client=True) as client:
        try:
            current = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            _logger().info(f"{deployment}: no such deployment (not deployed yet?); run form left as it is")
            return []
        schema = current.parameter_openapi_schema or {}
        before = schema.get("properties", {}).get("recorder")
        if not isinstance(before, dict):
            _logger().warning(f"{deployment}: has no parameter `recorder`; run form left as it is")
            return []
        after = {k: v for k, v in before.items() if k != "enum"}
        if known:  # an empty enum admits nothing: with no recorder known, any name may be typed
            after = {**after, "type": "string", "enum": known}
        if after == before:
            return []
        updated = copy.deepcopy(schema)
        updated["properties"]["recorder"] = after
        client.update_deployment(current.id, DeploymentUpdate(parameter_openapi_schema=updated))
    return [f"{deployment}: run form offers recorders {', '.join(known) or '(any name)'}"]
