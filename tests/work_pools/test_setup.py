"""Work pool and automation setup against the session stack: idempotent, and it keeps what an
operator set; a flow run started by a worker gets the pool's job variables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stack.paths import PROJECT_ROOT

pytestmark = pytest.mark.stack

POOL = "nvrflow-local"


def _setup(stack, *extra: str) -> list[str]:
    """`python -m work_pools.setup` as the stack runs it (its flags), plus `extra`."""
    from stack import supervisor

    done = subprocess.run(
        [sys.executable, "-m", "work_pools.setup", "--pool", POOL, "--root", str(PROJECT_ROOT),
         "--data", str(stack.data_dir), "--heartbeat", str(supervisor.HEARTBEAT_S),
         "--zombie-window", str(supervisor.zombie_window_s()), *extra],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_setup_twice_is_up_to_date(stack):
    _setup(stack)
    lines = _setup(stack)
    assert lines[0] == f"work pool {POOL} up to date", lines
    automation_lines = [line for line in lines[1:] if line.startswith("automation ")]
    assert len(automation_lines) >= 2 and all(line.endswith("up to date") for line in automation_lines), lines


def test_setup_keeps_the_limit_an_operator_set(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    with get_client(sync_client=True) as client:
        client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=7))
        try:
            lines = _setup(stack)
            assert lines[0] == f"work pool {POOL} up to date", lines
            assert client.read_work_pool(POOL).concurrency_limit == 7
            # Asked for, it changes; and --no-concurrency-limit removes it.
            assert _setup(stack, "--concurrency", "5")[0] == f"work pool {POOL} updated (concurrency_limit)"
            assert client.read_work_pool(POOL).concurrency_limit == 5
        finally:
            _setup(stack, "--no-concurrency-limit")
        assert client.read_work_pool(POOL).concurrency_limit is None


def test_setup_keeps_an_env_variable_an_operator_added(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    with get_client(sync_client=True) as client:
        template = client.read_work_pool(POOL).base_job_template
        original = json.loads(json.dumps(template))
        template["variables"]["properties"]["env"]["default"]["SITE_PROXY"] = "http://proxy:3128"
        client.update_work_pool(POOL, WorkPoolUpdate(base_job_template=template))
        try:
            assert _setup(stack)[0] == f"work pool {POOL} up to date"
            env = client.read_work_pool(POOL).base_job_template["variables"]["properties"]["env"]["default"]
            assert env["SITE_PROXY"] == "http://proxy:3128"
            assert env["NVRFLOW_DATA"] == str(stack.data_dir)
        finally:
            client.update_work_pool(POOL, WorkPoolUpdate(base_job_template=original))


def test_automations_exist_once_and_follow_their_file(stack):
    from prefect.client.orchestration import get_client

    from work_pools import automations

    wanted = automations.load()
    with get_client(sync_client=True) as client:
        zombie = client.read_automations_by_name(automations.ZOMBIE_AUTOMATION)
        assert len(zombie) == 1
        # A copy (as `prefect automation create --from-file` run twice leaves), the original
        # changed by hand: the copy that matches the file stays.
        client.create_automation(next(a for a in wanted if a.name == automations.ZOMBIE_AUTOMATION))
        client.pause_automation(zombie[0].id)
        lines = _setup(stack)
        assert f"automation {automations.ZOMBIE_AUTOMATION!r} up to date (1 duplicate(s) deleted)" in lines, (
            lines
        )
        # The one left, changed by hand, is put back as the file says.
        client.pause_automation(client.read_automations_by_name(automations.ZOMBIE_AUTOMATION)[0].id)
        assert f"automation {automations.ZOMBIE_AUTOMATION!r} updated (enabled)" in _setup(stack)
        for automation in wanted:
            found = client.read_automations_by_name(automation.name)
            assert len(found) == 1 and found[0].enabled, found
        zombie_now = client.read_automations_by_name(automations.ZOMBIE_AUTOMATION)[0]
        from stack import supervisor

        assert zombie_now.trigger.within.total_seconds() == supervisor.zombie_window_s()  # type: ignore[union-attr]
    again = [line for line in _setup(stack)[1:] if line.startswith("automation ")]
    assert again and all(line.endswith("up to date") for line in again), again


def test_flow_run_gets_the_pools_job_variables(stack, tmp_path):
    """The worker's own environment lacks them: they come from the pool's base job template."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from stack.state import load_state

    worker_pid = load_state(stack.data_dir).pids["worker"]
    worker_env = dict(
        kv.split(b"=", 1)
        for kv in Path(f"/proc/{worker_pid}/environ").read_bytes().split(b"\0")
        if b"=" in kv
    )
    for key in (
        b"NVRFLOW_ROOT",
        b"NVRFLOW_DATA",
        b"PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
        b"MALLOC_MMAP_THRESHOLD_",
    ):
        assert key not in worker_env

    # The same pull step as prefect.yaml's deployments: the working directory from $NVRFLOW_ROOT.
    pull = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["pull"]
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("nvrflow-env-probe")
        client.create_deployment(
            flow_id=flow_id, name="probe", entrypoint="tests/work_pools/env_probe.py:env_probe",
            work_pool_name=POOL, work_queue_name="default", pull_steps=pull,
            enforce_parameter_schema=False,
        )  # fmt: skip
    out = tmp_path / "seen.json"
    run = run_deployment("nvrflow-env-probe/probe", parameters={"out": str(out)}, timeout=180)
    assert run.state is not None and run.state.is_completed(), (run.state, run.state and run.state.message)
    seen = json.loads(out.read_text())
    assert seen == {
        "NVRFLOW_ROOT": str(PROJECT_ROOT),
        "NVRFLOW_DATA": str(stack.data_dir),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "cwd": str(PROJECT_ROOT),
    }
