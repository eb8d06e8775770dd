"""A malicious recorder in a running pipeline: XML bombs and external entities, answers that
never end, segment names made to break out of a shell or the data folder.

Each run ends with a clear error naming the recorder (or completes, for names that only look
dangerous), reads no more than it should, and leaves nothing outside the data folder.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.isapi.client import ANSWER_LIMIT
from stack.simulator import control
from stack.simulator.isapi_xml import HOSTILE_NAME_PREFIX
from tests.own_recorder import one_channel_spec, register

pytestmark = pytest.mark.stack

START = datetime(2026, 10, 20, 9, 0, 0, tzinfo=UTC)
SEGMENT_SECONDS = 4
SEGMENTS = 2
END = START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
PWNED = Path("/tmp/nvrflow-pwned")  # what the hostile names' `touch` would make


@pytest.fixture(scope="module")
def hostile(stack, tmp_path_factory):
    """A recorder of this module's own, with the port its faults are set on."""
    folder = tmp_path_factory.mktemp("hostile-recorder")
    spec = one_channel_spec("hostile-01", START, END, SEGMENT_SECONDS, scene="coffee")
    register(spec)
    with control.running(spec, folder):
        yield spec["recorders"][0]["port"]


def _run(port: int, mode: str):
    from flows.pipeline import recorder_pipeline

    control.reset_stats(port)
    control.set_faults(port, hostile=mode)
    began = time.monotonic()
    try:
        state = recorder_pipeline("hostile-01", START, END, return_state=True)
    finally:
        control.reset_faults(port)
    return state, time.monotonic() - began, control.stats(port)


@pytest.mark.parametrize("mode", ["xml_bomb", "external_entity"])
def test_entities_in_a_search_answer_fail_the_run_at_once_and_expand_nothing(hostile, mode):
    state, seconds, stats = _run(hostile, mode)
    assert state.is_failed()
    assert "hostile-01" in state.message and "forbidden XML construct" in state.message, state.message
    assert "root:" not in state.message  # the entity was not read
    # Not retried: the same request gets the same answer.
    assert stats["requests_by_path"]["/ISAPI/ContentMgmt/search"] == 1, stats["requests_by_path"]
    assert seconds < 60


def test_a_search_answer_that_never_ends_is_read_up_to_its_limit(hostile):
    state, _seconds, stats = _run(hostile, "endless_search")
    assert state.is_failed()
    assert f"larger than {ANSWER_LIMIT // 1024**2} MiB" in state.message and "hostile-01" in state.message
    assert stats["requests_by_path"]["/ISAPI/ContentMgmt/search"] == 1


def test_a_download_that_never_ends_stops_at_the_announced_size_and_keeps_no_file(hostile, data_dir):
    state, _seconds, stats = _run(hostile, "endless_download")
    assert state.is_failed()
    assert f"hostile-01: {SEGMENTS} of {SEGMENTS} segments failed" in state.message, state.message
    assert "more than the announced" in state.message
    exports = data_dir / "exports" / "hostile-01"
    # The download was written there (its .part sits beside where the export would be), then removed.
    folders = [p for p in exports.rglob("*") if p.is_dir()]
    assert exports.is_dir() and folders, f"{exports}: no folder the download was written in"
    assert not [p for p in exports.rglob("*") if p.is_file()], "no export (nor .part) is kept"
    assert stats["downloads_completed"] == 0


def test_names_made_to_break_out_run_nothing_and_stay_in_the_data_folder(hostile, data_dir):
    from blocks.clickhouse import ClickHouseSink

    PWNED.unlink(missing_ok=True)
    before = {p for p in Path("/tmp").iterdir()}
    state, _seconds, _stats = _run(hostile, "hostile_names")
    assert state.is_completed(), state.message
    assert state.result()["persisted"] == SEGMENTS
    assert not PWNED.exists()
    made = {p for p in Path("/tmp").iterdir()} - before
    assert not [p for p in made if "pwned" in p.name or p.name.startswith("..")], made
    files = [
        p for kind in ("exports", "mp4") for p in (data_dir / kind / "hostile-01").rglob("*") if p.is_file()
    ]
    assert len(files) == 2 * SEGMENTS
    for path in files:
        assert path.resolve().is_relative_to(data_dir.resolve())
        assert "/" not in path.name and "$(" not in path.name and "`" not in path.name
    with ClickHouseSink.load("nvrflow").connect() as ch:
        names = [r[0] for r in ch.query("SELECT segment FROM {db}.segments WHERE recorder = 'hostile-01'")]
    assert len(names) == SEGMENTS and all(HOSTILE_NAME_PREFIX not in n and "/" not in n for n in names), names
