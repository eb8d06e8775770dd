"""Apply the automations kept in `deployments/automations/*.yaml` (idempotent).

`python -m work_pools.automations [--zombie-window SECONDS]` with PREFECT_API_URL set; also
run by `python -m work_pools.setup`. Each automation is found by its name: created when
missing, updated when it differs from its file, left alone when it is the same; copies of the
same name (from `prefect automation create --from-file` run twice) are deleted, so there is
exactly one.

`--zombie-window` replaces the window of the zombie automation (the embedded test stack uses
a shorter one); it may not be shorter than two heartbeats of Prefect's minimum frequency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml  # type: ignore[import-untyped]  # PyYAML (a Prefect dependency) has no stubs here
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore, EventTrigger
from prefect.exceptions import ObjectNotFound

AUTOMATIONS_DIR = Path(__file__).resolve().parent.parent / "deployments" / "automations"
ZOMBIE_AUTOMATION = "nvrflow crash zombie flows"
RERUN_AUTOMATION = "nvrflow re-run crashed recorder pipelines"
# Two heartbeats at Prefect's minimum frequency (30 s): one late heartbeat never crashes a run.
MIN_ZOMBIE_WINDOW_S = 60


def notification_block_id(slug_and_name: str) -> UUID | None:
    """The id of a saved notification block named `<block type slug>/<name>`, None if there is none."""
    from prefect.blocks.core import Block

    try:
        block = Block.load(slug_and_name)
    except (ValueError, ObjectNotFound):
        return None
    return block._block_document_id  # type: ignore[union-attr]  # sync load: the block


def load(
    folder: Path = AUTOMATIONS_DIR,
    zombie_window_s: int | None = None,
    resolve_block: Callable[[str], UUID | None] | None = None,
    skipped: list[str] | None = None,
) -> list[AutomationCore]:
    """Every automation of the folder's YAML files (`automations:` lists), validated.

    A file with `notification_block: <type slug>/<name>` (the alerts) gets that block's id,
    from `resolve_block`, in its send-notification actions; without a resolver, or without
    such a block saved, the file's automations are left out and `skipped` says why.
    """
    found: list[AutomationCore] = []
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        raws = data.get("automations", [])
        if data.get("notification_block"):
            block_id = resolve_block(data["notification_block"]) if resolve_block else None
            if block_id is None:
                if skipped is not None:
                    skipped.append(
                        f"{path.name}: not applied, no notification block {data['notification_block']!r} "
                        "(save one, e.g. a custom-webhook block, under that name)"
                    )
                continue
            for raw in raws:
                for action in raw.get("actions", []):
                    if action.get("type") == "send-notification":
                        action["block_document_id"] = str(block_id)
        found += [AutomationCore.model_validate(raw) for raw in raws]
    names = [a.name for a in found]
    if len(set(names)) != len(names):
        raise ValueError(f"automation names repeat in {folder}: {names}")
    if zombie_window_s is not None:
        if zombie_window_s < MIN_ZOMBIE_WINDOW_S:
            raise ValueError(f"zombie window must be at least {MIN_ZOMBIE_WINDOW_S} s")
        zombie = next(a for a in found if a.name == ZOMBIE_AUTOMATION)
        assert isinstance(zombie.trigger, EventTrigger)
        zombie.trigger.within = timedelta(seconds=zombie_window_s)
    return found


def _comparable(automation: AutomationCore) -> dict[str, Any]:
    """What an automation does, without the ids the server or the models give its parts.

    Lists of names are sorted: a trigger's `expect`, `after` and `for_each` are sets, whose
    order in a dump changes with the process's string hashing (PYTHONHASHSEED).
    """
    dumped = AutomationCore.model_validate(automation.model_dump()).model_dump(mode="json")

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "id"}
        if isinstance(value, list):
            items = [strip(v) for v in value]
            return sorted(items) if all(isinstance(v, str) for v in items) else items
        return value

    return strip(dumped)


def apply(folder: Path = AUTOMATIONS_DIR, zombie_window_s: int | None = None) -> list[str]:
    """Bring the server's automations in line with the files; one line of what was done each."""
    done: list[str] = []
    wanted_all = load(folder, zombie_window_s, resolve_block=notification_block_id, skipped=done)
    with get_client(sync_client=True) as client:
        for wanted in wanted_all:
            # Of several copies, one that already matches the file is kept (else any): nothing
            # changes that need not.
            existing = sorted(
                client.read_automations_by_name(wanted.name),
                key=lambda a: (_comparable(a) != _comparable(wanted), str(a.id)),
            )
            if not existing:
                client.create_automation(wanted)
                done.append(f"automation {wanted.name!r} created")
                continue
            keep, extra = existing[0], existing[1:]
            for copy in extra:
                client.delete_automation(copy.id)
            stored, wanted_now = _comparable(keep), _comparable(wanted)
            if stored != wanted_now:
                client.update_automation(keep.id, wanted)
                changed = sorted(
                    k for k in wanted_now.keys() | stored.keys() if stored.get(k) != wanted_now.get(k)
                )
                done.append(f"automation {wanted.name!r} updated ({', '.join(changed)})")
            else:
                done.append(f"automation {wanted.name!r} up to date")
            if extra:
                done[-1] += f" ({len(extra)} duplicate(s) deleted)"
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--zombie-window", type=int, help="seconds without a heartbeat before a run is Crashed"
    )
    args = parser.parse_args(argv)
    for line in apply(zombie_window_s=args.zombie_window):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
