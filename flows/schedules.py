"""Per-recorder schedules: `recorder-pipeline/<recorder>`, one deployment per recorder, each with its cron.

    python -m flows.schedules list
    python -m flows.schedules pause nvr-01
    python -m flows.schedules resume nvr-01      # and catch up through the ledger

Each recorder's deployment is made from the base deployment `recorder-pipeline/recorder`
(same flow, entrypoint, work pool, pull steps and parameter form) with `recorder` fixed
to its name and one schedule, its own cron from the inventory (default hourly). This is
the seeds' per-recorder state machine: a schedule that is active is *running*; a paused
one is *paused* (no runs are made for it; nothing else changes); a recorder synced but
never scheduled yet is *init*. Pausing one recorder touches no other.

`prefect deployment schedule pause 'recorder-pipeline/nvr-01' <schedule id>` works as
well; `resume` here also starts a backfill of the recorder's hours since the pause
(`flows.backfill`), so a resumed recorder catches up what it missed.

The recorder deployments are separate from prefect.yaml on purpose: `prefect deploy`
replaces the schedules of the deployments it manages, and would wipe what the inventory
made. A disabled recorder (`enabled` no) has its schedule paused by the inventory sync, is
listed as *disabled*, and is not resumed here (the workbook is where it is enabled again);
an operator's pause survives a sync of an enabled recorder.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
from prefect.client.schemas.objects import DeploymentSchedule
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound

from blocks.loading import load_block
from blocks.recorder import HikvisionRecorder
from core.windows import cli_time
from flows.launch import PIPELINE_DEPLOYMENT, PIPELINE_FLOW, run_tags
from work_pools.queues import ensure_site_queues, site_queue

DEFAULT_CRON = "5 * * * *"


def deployment_name(recorder: str) -> str:
    return f"{PIPELINE_FLOW}/{recorder}"


def _slug(recorder: str) -> str:
    return f"recorder-{recorder}"


def _read(client: SyncPrefectClient, name: str) -> DeploymentResponse | None:
    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def ensure_recorder_schedule(
    recorder: str, cron: str = DEFAULT_CRON, enabled: bool = True, site: str = ""
) -> list[str]:
    """Create or update `recorder-pipeline/<recorder>` and its schedule; returns what changed.

    Its runs go to the live queue of the recorder's site (`work_pools.queues`). Without the
    base deployment (nothing deployed yet) there is nothing to copy: skipped.
    """
    schedule = CronSchedule(cron=cron, timezone="UTC")
    queue = site_queue(site)
    with get_client(sync_client=True) as client:
        base = _read(client, PIPELINE_DEPLOYMENT)
        if base is None:
            return [
                f"{recorder}: no {PIPELINE_DEPLOYMENT} deployment yet, schedule not made (run prefect deploy)"
            ]
        changes = ensure_site_queues(base.work_pool_name, {site}) if base.work_pool_name else []
        current = _read(client, deployment_name(recorder))
        if current is None:
            client.create_deployment(
                flow_id=base.flow_id, name=recorder, parameters={"recorder": recorder},
                description=f"{recorder}: the hour before each scheduled start ({cron}, UTC).",
                work_pool_name=base.work_pool_name, work_queue_name=queue,
                tags=[*base.tags, *run_tags(recorder, site)], path=base.path, entrypoint=base.entrypoint,
                pull_steps=base.pull_steps, parameter_openapi_schema=base.parameter_openapi_schema,
                enforce_parameter_schema=base.enforce_parameter_schema, job_variables=base.job_variables,
                schedules=[DeploymentScheduleCreate(schedule=schedule, active=enabled, slug=_slug(recorder))],
            )  # fmt: skip
            return [
                *changes,
                f"{deployment_name(recorder)}: created, {cron} ({'running' if enabled else 'paused'})",
            ]
        wanted: dict[str, Any] = {
            "parameters": {"recorder": recorder},
            "entrypoint": base.entrypoint,
            "work_queue_name": queue,
            "tags": [*base.tags, *run_tags(recorder, site)],
            "parameter_openapi_schema": base.parameter_openapi_schema,
        }
        if any(getattr(current, field) != value for field, value in wanted.items()):
            client.update_deployment(current.id, DeploymentUpdate(**wanted))
            changes.append(
                f"{deployment_name(recorder)}: parameters, entrypoint, queue, tags or run form updated"
            )
        mine = _schedule_of(current, recorder)
        if mine is None:
            client.create_deployment_schedules(
                current.id,
                [DeploymentScheduleCreate(schedule=schedule, active=enabled, slug=_slug(recorder))],
            )
            changes.append(f"{deployment_name(recorder)}: schedule {cron} added")
            return changes
        if getattr(mine.schedule, "cron", None) != cron:
            client.update_deployment_schedule(current.id, mine.id, schedule=schedule)
            changes.append(
                f"{deployment_name(recorder)}: schedule {getattr(mine.schedule, 'cron', '?')} -> {cron}"
            )
        if not enabled and mine.active:
            client.update_deployment_schedule(current.id, mine.id, active=False)
            changes.append(f"{deployment_name(recorder)}: paused (disabled in the inventory)")
        return changes


def _schedule_of(deployment: DeploymentResponse, recorder: str) -> DeploymentSchedule | None:
    return next((s for s in deployment.schedules if s.slug == _slug(recorder)), None)


def state_of(recorder: str) -> tuple[str, DeploymentSchedule | None]:
    """`disabled` (in the inventory), `init` (no schedule yet), `running` or `paused`, and the schedule."""
    with get_client(sync_client=True) as client:
        deployment = _read(client, deployment_name(recorder))
    schedule = _schedule_of(deployment, recorder) if deployment else None
    if not _enabled(recorder):
        return "disabled", schedule
    if schedule is None:
        return "init", None
    return ("running" if schedule.active else "paused"), schedule


def _enabled(recorder: str) -> bool:
    try:
        return load_block(HikvisionRecorder, recorder).enabled
    except ValueError:
        raise ValueError(f"no recorder block named {recorder!r}: sync the inventory first") from None


def set_active(recorder: str, active: bool) -> DeploymentSchedule:
    """Pause or resume one recorder's schedule; returns it as it was before. A recorder disabled in
    the inventory is not resumed: the inventory is where it is enabled again."""
    if active and not _enabled(recorder):
        raise ValueError(
            f"recorder {recorder!r} is disabled in the inventory (enabled: no), so it stays paused: "
            "set enabled to yes in the workbook and run sync-inventory"
        )
    with get_client(sync_client=True) as client:
        deployment = _read(client, deployment_name(recorder))
        schedule = _schedule_of(deployment, recorder) if deployment else None
        if deployment is None or schedule is None:
            raise ValueError(f"recorder {recorder!r} has no schedule: sync the inventory first")
        client.update_deployment_schedule(deployment.id, schedule.id, active=active)
    return schedule


def resume(recorder: str, catch_up: bool = True, since: datetime | None = None) -> dict[str, Any]:
    """Resume a recorder's schedule and backfill its hours missing since it was paused (or `since`)."""
    from flows.backfill import backfill

    before = set_active(recorder, True)
    if not catch_up or (before.active and since is None):
        return {"missing": 0, "runs": {}}
    start = (since or before.updated or datetime.now(UTC)).astimezone(UTC)
    return backfill(start.replace(minute=0, second=0, microsecond=0), datetime.now(UTC), recorders=[recorder])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.schedules", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "pause", "resume"])
    parser.add_argument("recorder", nargs="?", help="recorder name (pause, resume)")
    parser.add_argument("--since", type=cli_time,
                        help="resume: catch up from this time (ISO 8601 with zone) instead of the pause")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "list":
        from flows.recorders import registered_recorders

        for name in sorted(registered_recorders()):
            state, schedule = state_of(name)
            print(f"{name:24} {state:8} {getattr(schedule.schedule, 'cron', '') if schedule else ''}")
        return 0
    if not args.recorder:
        parser.error(f"{args.command} needs a recorder name")
    try:
        if args.command == "pause":
            set_active(args.recorder, False)
            print(
                f"{args.recorder}: paused; no runs until `python -m flows.schedules resume {args.recorder}`"
            )
        else:
            result = resume(args.recorder, since=args.since)
            print(f"{args.recorder}: running; {result['missing']} missed hour(s) started as backfill runs")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
