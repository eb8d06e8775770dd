"""Test session setup: one embedded stack per pytest process, in its own data folder and ports
(`make test` runs three processes, pytest-xdist, each taking whole test files).

The stack's environment (PREFECT_API_URL above all) is set here, at import time,
because Prefect reads its settings when it is first imported by a test module.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from stack.state import prepare_state

_DATA = Path(tempfile.mkdtemp(prefix="nvrflow-test-"))
_STATE = prepare_state(_DATA)
_STATE.save()
os.environ.update(_STATE.env())
# No cron run fires during the session: tests decide what runs when (stack.register).
os.environ["NVRFLOW_SCHEDULES"] = "off"


@pytest.fixture(scope="session")
def stack():
    """The running stack (started on first use, stopped and checked at the end of the session)."""
    from stack import supervisor

    # The still photographs: the classifier's labels of them are what many tests check.
    state = supervisor.start(_DATA, say=lambda _msg: None, scripted=False)
    yield state
    supervisor.stop(_DATA, say=lambda _msg: None)
    leftovers = supervisor._tagged_pids(str(_DATA))
    assert not leftovers, f"stack processes left after stop: {leftovers}"


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:  # a failed session's folder and Prefect database stay, to be looked at
        from stack import prefect_database

        prefect_database.drop(_DATA)
        shutil.rmtree(_DATA, ignore_errors=True)


@pytest.fixture
def data_dir() -> Path:
    return _DATA
