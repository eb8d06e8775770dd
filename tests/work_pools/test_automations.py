"""The crash automations as the server reads them: which events each one acts on (no stack)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from work_pools import automations

RUN = "prefect.flow-run.5f0c1d56-0000-4000-8000-000000000001"


def _trigger(name: str):
    from prefect.server.events.schemas.automations import EventTrigger

    found = next(a for a in automations.load() if a.name == name)
    return EventTrigger.model_validate(found.trigger.model_dump(mode="json"))


def _event(event: str, run_count: int = 1, flow: str = "recorder-pipeline", deployment: bool = True):
    from prefect.server.events.schemas.events import ReceivedEvent

    related = [{"prefect.resource.id": f"prefect.flow.{uuid4()}", "prefect.resource.role": "flow",
                "prefect.resource.name": flow}]  # fmt: skip
    if deployment:
        related.append(
            {"prefect.resource.id": f"prefect.deployment.{uuid4()}", "prefect.resource.role": "deployment"}
        )
    now = datetime.now(UTC)
    return ReceivedEvent(
        id=uuid4(), occurred=now, received=now, event=event, related=related,
        resource={"prefect.resource.id": RUN, "prefect.run-count": str(run_count)},
    )  # fmt: skip


@pytest.mark.parametrize(("run_count", "rerun"), [(0, False), (1, True), (2, True), (3, False), (7, False)])
def test_a_crashed_pipeline_is_rerun_at_most_twice(run_count, rerun):
    trigger = _trigger(automations.RERUN_AUTOMATION)
    assert trigger.covers(_event("prefect.flow-run.Crashed", run_count)) is rerun


def test_only_crashed_recorder_pipelines_are_rerun():
    trigger = _trigger(automations.RERUN_AUTOMATION)
    assert not trigger.covers(_event("prefect.flow-run.Failed"))
    assert not trigger.covers(_event("prefect.flow-run.Crashed", flow="dispatch"))


def test_zombie_trigger_watches_heartbeats_of_deployment_runs():
    trigger = _trigger(automations.ZOMBIE_AUTOMATION)
    assert trigger.posture == "Proactive"
    assert trigger.starts_after("prefect.flow-run.heartbeat")
    # Any later event of the run (heartbeat, state change) disarms it.
    assert trigger.expects("prefect.flow-run.heartbeat") and trigger.expects("prefect.flow-run.Completed")
    assert trigger.covers(_event("prefect.flow-run.heartbeat"))
    # A flow called in-process heartbeats every 180 s by default: not watched.
    assert not trigger.covers(_event("prefect.flow-run.heartbeat", deployment=False))
    assert trigger.within.total_seconds() == 90


def test_zombie_window_override_and_its_floor():
    zombie = next(a for a in automations.load(zombie_window_s=60) if a.name == automations.ZOMBIE_AUTOMATION)
    assert zombie.trigger.within.total_seconds() == 60  # type: ignore[union-attr]
    with pytest.raises(
        ValueError, match=f"zombie window must be at least {automations.MIN_ZOMBIE_WINDOW_S} s"
    ):
        automations.load(zombie_window_s=45)


def test_a_trigger_expecting_several_events_compares_equal_whatever_the_hashing():
    # `expect` is a set: two equal sets built in another order dump their names in another
    # order under some PYTHONHASHSEED values (4 here), which once made `apply` update the alert
    # automation on every call.
    import json
    import subprocess
    import sys

    from stack.paths import PROJECT_ROOT

    probe = """
import json
from prefect.events.schemas.automations import AutomationCore
from work_pools import automations
wanted = next(a for a in automations.load(resolve_block=lambda _: __import__("uuid").uuid4())
              if len(a.trigger.expect) > 1)
stored = wanted.model_dump(mode="json")
stored["trigger"]["expect"] = list(reversed(stored["trigger"]["expect"]))
stored = AutomationCore.model_validate(stored)
print(json.dumps({
    "dumps_differ": wanted.model_dump(mode="json") != stored.model_dump(mode="json"),
    "equal": automations._comparable(wanted) == automations._comparable(stored),
}))
"""
    found = []
    for seed in ("4", "9", "22", "34"):
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert any(f["dumps_differ"] for f in found), "no seed shows the hazard any more: pick others"
    assert all(f["equal"] for f in found), found
