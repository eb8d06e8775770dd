"""No password leaves its block: after a run that succeeds and one that fails, no log, flow-run
parameter, artifact, state message, result file, ClickHouse row or row of the Prefect database
holds the recorders' or ClickHouse's password, in clear, URL-quoted or as basic-auth credentials.

Only the files made to hold them may: the stack's own state file (mode 0600) and the simulated
devices' accounts (a recorder knows its own password).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from stack.simulator import control
from stack.simulator.spec import demo_window, load_spec

pytestmark = pytest.mark.stack

HOLDERS = {Path("stack/state.json"), Path("stack/simulator.json")}


def _forms(secret: str, users: set[str]) -> set[bytes]:
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    forms |= {base64.b64encode(f"{user}:{secret}".encode()).decode() for user in users}
    return {form.encode() for form in forms}


def _prefect_database(data_dir: Path) -> bytes:
    name = (data_dir / "prefect" / "postgres-database").read_text().strip()
    dump = subprocess.run(
        ["runuser", "-u", "postgres", "--", "pg_dump", "--data-only", "--no-owner", "-d", name],
        capture_output=True, timeout=300, cwd="/", check=True,
    )  # fmt: skip
    assert b"flow_run" in dump.stdout  # the dump is of the stack's Prefect database
    return dump.stdout


def _files(data_dir: Path):
    for folder, _dirs, names in os.walk(data_dir):
        for name in names:
            path = Path(folder) / name
            if path.relative_to(data_dir) not in HOLDERS and path.is_file() and not path.is_symlink():
                yield path


def test_no_password_is_kept_anywhere_after_runs_that_succeed_and_fail(stack):
    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    recorder = spec.recorders[-1]
    secrets = {
        "recorder password": _forms(stack.recorder_password, {r.username for r in spec.recorders}),
        "ClickHouse password": _forms(stack.clickhouse_password, {"default"}),
    }
    assert {r.password for r in spec.recorders} == {stack.recorder_password}

    from flows.pipeline import recorder_pipeline

    start, end = demo_window()
    assert recorder_pipeline(recorder.name, start, end, channels=[1])["failed"] == []

    # A failing run, through the deployment and the worker: the recorder turns the password down.
    control.set_faults(recorder.port, wrong_password=True)
    try:
        prefect = str(Path(sys.executable).parent / "prefect")
        failed = subprocess.run(
            [prefect, "deployment", "run", "recorder-pipeline/recorder", "--param", f"recorder={recorder.name}",
             "--param", f"start={start.isoformat()}", "--param", f"end={end.isoformat()}", "--watch",
             "--watch-timeout", "600"],
            capture_output=True, timeout=700,
        )  # fmt: skip
    finally:
        control.reset_faults(recorder.port)
    said = failed.stdout + failed.stderr
    run_id = re.search(rb"UUID: ([0-9a-f-]{36})", said)
    assert failed.returncode != 0 and run_id, said[-2000:]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id.group(1).decode())).state
    assert state is not None and state.is_failed() and "wrong credentials" in (state.message or ""), state

    places: dict[str, bytes] = {
        "the deployment run's output": said,
        "the Prefect database": _prefect_database(stack.data_dir),
    }
    searched = 0
    for path in _files(stack.data_dir):
        places[str(path.relative_to(stack.data_dir))] = path.read_bytes()
        searched += 1
    assert searched > 50, "the data folder holds the runs' logs, results, exports and ClickHouse's files"

    found = sorted(
        f"{what} in {place}"
        for place, content in places.items()
        for what, forms in secrets.items()
        if any(form in content for form in forms)
    )
    assert found == [], found
