"""What the run form and `prefect deployment run` accept: checked by the Prefect server before a
run exists.

The server validates a deployment's parameters against its schema (the deployments enforce
it). Prefect writes the schema from the flow's signature on every `prefect deploy`; this module
adds what the signature cannot say, and is run after every deploy (`stack.register`, the
inventory sync):
- `recorder` of the pipeline: a choice of the known recorders (a dropdown in the UI; any other
  name refused);
- `start` and `end` of the pipeline, dispatch and backfill: both or neither (`dependentRequired`),
  each an ISO 8601 time with a time zone (`WindowTime`'s pattern, part of the signature).
What only a run can know (end after start, the longest window, a calendar date that does not
exist) fails the run at once, named `<recorder> invalid window` (`core.windows.Window.of_run`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.exceptions import MissingContextError, ObjectNotFound
from prefect.logging import get_logger
from prefect.runtime import flow_run
from pydantic import Field

from blocks.loading import block_names
from blocks.recorder import HikvisionRecorder
from core.windows import TIME_PATTERN, TIME_RULE, Window
from flows.launch import PIPELINE_DEPLOYMENT

DISPATCH_DEPLOYMENT = "dispatch/fleet"
BACKFILL_DEPLOYMENT = "backfill/hourly-gaps"
WINDOW_DEPLOYMENTS = (PIPELINE_DEPLOYMENT, DISPATCH_DEPLOYMENT, BACKFILL_DEPLOYMENT)
# Both window ends, or neither: for the server's check before a run exists.
WHOLE_WINDOW = {"start": ["end"], "end": ["start"]}

# A window end as a flow parameter: the pattern reaches the deployment's schema.
WindowTime = Annotated[datetime | None, Field(json_schema_extra={"pattern": TIME_PATTERN})]


def window_of_run(start: object, end: object, long_window: bool = False) -> Window:
    """The window this flow run is for (its parameters, else the hour before its scheduled start)."""
    return Window.of_run(start, end, flow_run.scheduled_start_time, long_window)


def _logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("nvrflow.run_form")


def _reshape(deployment: str, change) -> list[str]:
    """Apply `change(schema) -> schema` to the deployment's parameter schema; what changed, or nothing."""
    with get_client(sync_client=True) as client:
        try:
            current = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            _logger().info(f"{deployment}: no such deployment (not deployed yet?); run form left as it is")
            return []
        before = current.parameter_openapi_schema or {}
        after = change(copy.deepcopy(before))
        if after is None or after == before:
            return []
        client.update_deployment(current.id, DeploymentUpdate(parameter_openapi_schema=after))
    return [f"{deployment}: run form updated"]


def _whole_window(schema: dict[str, Any]) -> dict[str, Any]:
    if {"start", "end"} <= set(schema.get("properties", {})):
        schema["dependentRequired"] = WHOLE_WINDOW
        for end in ("start", "end"):
            text = schema["properties"][end].get("description", "")
            if TIME_RULE not in text:
                schema["properties"][end]["description"] = f"{text}\n({TIME_RULE}.)".strip()
    return schema


def require_whole_windows(deployments: Iterable[str] = WINDOW_DEPLOYMENTS) -> list[str]:
    """Refuse a lone `start` or `end` in the runs of these deployments, before a run exists."""
    return [line for d in deployments for line in _reshape(d, _whole_window)]


def offer_recorders_in_run_form(
    names: Iterable[str] | None = None, deployment: str = PIPELINE_DEPLOYMENT
) -> list[str]:
    """Make the deployment's `recorder` parameter a choice of the known recorders; returns what changed.

    The parameter's schema becomes an `enum` of `names` (default: every recorder block, sorted),
    its title and description kept, so the run form offers a dropdown and the server refuses a
    run for any other name; the window rule is applied too. Idempotent. A missing deployment is
    skipped with a log line.
    """
    known = sorted(set(block_names(HikvisionRecorder) if names is None else names))

    def offer(schema: dict[str, Any]) -> dict[str, Any] | None:
        before = schema.get("properties", {}).get("recorder")
        if not isinstance(before, dict):
            _logger().warning(f"{deployment}: has no parameter `recorder`; run form left as it is")
            return None
        after = {k: v for k, v in before.items() if k != "enum"}
        if known:  # an empty enum admits nothing: with no recorder known, any name may be typed
            after = {**after, "type": "string", "enum": known}
        schema["properties"]["recorder"] = after
        return _whole_window(schema)

    changed = _reshape(deployment, offer)
    return [f"{deployment}: run form offers recorders {', '.join(known) or '(any name)'}"] if changed else []


def shape_run_forms() -> list[str]:
    """Every run form's rules, after a deploy or an inventory sync: the recorders, whole windows."""
    return [*offer_recorders_in_run_form(), *require_whole_windows(WINDOW_DEPLOYMENTS[1:])]
