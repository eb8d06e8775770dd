"""Exactly-once persistence: token deduplication, the outbox across an outage, a re-run after a crash
between an insert and the task's completion; all through the real `persist_segment` task."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.clickhouse import ClickHouseSink
from blocks.clickhouse_outbox import flush
from blocks.clickhouse_schema import HOURLY_SUMMARY_SQL, MIGRATIONS
from core.segment import Segment
from flows.persist import Destination, PersistResult, persist_segment, segment_batches
from stack.paths import PROJECT_ROOT
from stack.simulator.spec import demo_window
from tests.gateway_process import PASSWORD_ENV, Gateway
from tests.polling import wait_until
from tests.support import CLASSIFIER
from video.classify import Classification, Detection
from video.transcode import TranscodeResult

pytestmark = [
    pytest.mark.stack,  # the Prefect API of the stack records the task runs
    # persist_segment runs outside a flow here; its log lines cannot reach the API then.
    pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"),
]

PASSWORD = "persist-" + uuid.uuid4().hex
START = datetime(2024, 5, 6, 10, 59, 50, tzinfo=UTC)
FRAMES = 20
ROWS = 1 + FRAMES * 5  # a segment's row and its frames' top-5 labels


@pytest.fixture
def gateway(tmp_path) -> Iterator[Gateway]:
    with Gateway(tmp_path / "clickhouse", PASSWORD, hold_file=tmp_path / "hold") as gw:
        yield gw


@pytest.fixture
def sink(gateway) -> ClickHouseSink:
    sink = gateway.sink("nvr")
    with sink.connect() as writer:
        writer.migrate()
    return sink


def stages(size: int = 4096, frames: int = FRAMES) -> tuple[Segment, TranscodeResult, Classification]:
    """What `persist_segment` is given for one 20 s segment across an hour boundary."""
    segment = Segment.of_recording("nvr-t", 1, "seg-1", START, START + timedelta(seconds=frames), size)
    key = f"transcode/v1/{segment.key}"
    result = TranscodeResult(Path("/data/mp4/seg-1.mp4"), "remux", "h264", float(frames), False, key)
    detections = [
        Detection(
            START + timedelta(seconds=i), rank, "cat" if rank == 1 else f"other-{rank}", 0.9 - rank / 10
        )
        for i in range(frames)
        for rank in range(1, 6)
    ]
    classification = Classification("m", 3, frames, detections, key=f"classify/v1/{segment.key}")
    return segment, result, classification


def persist(sink: ClickHouseSink, **segment) -> PersistResult:
    """The production task, with its own retry policy."""
    return persist_segment(*stages(**segment), Destination(sink, None, "site", "run-1"))


def counts(sink: ClickHouseSink) -> tuple[int, int]:
    """Rows as stored, without FINAL: only the deduplication token may keep copies out."""
    with sink.connect() as ch:
        segments = ch.query("SELECT count() FROM {db}.segments")[0][0]
        detections = ch.query("SELECT count() FROM {db}.detections")[0][0]
    return segments, detections


def hourly(sink: ClickHouseSink) -> dict[str, int]:
    with sink.connect() as ch:
        return {f"{r[2]:%H} {r[5]}": r[6] for r in ch.query(HOURLY_SUMMARY_SQL)}


EXACT = (1, FRAMES * 5)
EXACT_HOURLY = {"10 cat": 10, "11 cat": 10}


def _task_run(state):
    from prefect.client.orchestration import get_client

    def recorded():
        with get_client(sync_client=True) as client:
            run = client.read_task_run(state.state_details.task_run_id)
        return run if run.state is not None and run.state.is_final() else None

    return wait_until("the task run recorded final", recorded, 60)


def test_outage_goes_to_the_outbox_and_flush_sends_it_once(
    stack, gateway, sink, tmp_path, monkeypatch, caplog
):
    outbox = tmp_path / "outbox"
    monkeypatch.setenv("NVRFLOW_OUTBOX", str(outbox))  # where `persist_segment` keeps batches
    gateway.stop()

    with caplog.at_level(logging.INFO):
        state = persist_segment(*stages(), Destination(sink, None, "site", "run-1"), return_state=True)
    assert state.is_completed(), state
    assert state.result() == PersistResult(inserted=0, outboxed=ROWS)
    # The CLICKHOUSE preset: two retries, then the last attempt keeps the rows instead of failing.
    assert _task_run(state).run_count == 3
    messages = [r.getMessage() for r in caplog.records]
    retries = [m for m in messages if "ClickHouseUnavailable" in m and " - Retry " in m]
    assert len(retries) == 2, messages
    (kept,) = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "outbox" in r.getMessage()
    ]
    assert kept.endswith(f"; {ROWS} rows kept in the outbox {outbox}, flush-outbox will send them"), kept

    files = sorted(outbox.iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)  # no temp file left behind
    stored = [json.loads(f.read_text()) for f in files]
    batches = segment_batches(*stages(), "site", "run-1")
    assert {(s["table"], s["token"], len(s["rows"])) for s in stored} == {
        (b.table, b.token, len(b.rows)) for b in batches
    }

    # Still down: nothing is sent, nothing is deleted.
    assert flush(sink, outbox) == (0, 2)
    assert sorted(outbox.iterdir()) == files

    gateway.start()
    assert flush(sink, outbox) == (2, 0)
    assert list(outbox.iterdir()) == []
    assert counts(sink) == EXACT
    assert flush(sink, outbox) == (0, 0)
    # The task again, now that the server is back (a re-run), adds nothing either.
    assert persist(sink) == PersistResult(inserted=ROWS, outboxed=0)
    assert counts(sink) == EXACT
    assert hourly(sink) == EXACT_HOURLY


# A process of its own runs the task, as a worker's flow run would, until the test kills it.
_PERSIST_IN_A_PROCESS = f"""
import os
from pydantic import SecretStr
from blocks.clickhouse import ClickHouseSink
from flows.persist import Destination, persist_segment
from tests.flows.test_persist import stages
sink = ClickHouseSink(url=os.environ["SINK_URL"], password=SecretStr(os.environ["{PASSWORD_ENV}"]), database="nvr")
persist_segment(*stages(), Destination(sink, None, "site", "run-killed"))
"""


def test_a_crash_between_insert_and_completion_then_a_rerun_stores_the_rows_once(
    stack, gateway, sink, tmp_path
):
    """The insert reached the server, the process died before its reply (the gateway's --hold-file
    withholds it); the re-run sends the same batches again, with a later inserted_at."""
    assert gateway.hold_file is not None
    held = gateway.hold_file.with_name(gateway.hold_file.name + ".held")
    gateway.hold_file.touch()
    env = {**os.environ, "SINK_URL": sink.url, PASSWORD_ENV: PASSWORD, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _PERSIST_IN_A_PROCESS], cwd=PROJECT_ROOT, env=env)  # noqa: S603
    try:
        wait_until("an insert done, its reply held", lambda: held.exists() and held.read_text(), 120)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        gateway.hold_file.unlink()
    # The segment's row is in, its reply never arrived; the task stopped before its detections.
    assert held.read_text().split() == ["127.0.0.1", "1"]
    assert counts(sink) == (1, 0)

    assert persist(sink) == PersistResult(inserted=ROWS, outboxed=0)
    assert counts(sink) == EXACT
    assert hourly(sink) == EXACT_HOURLY


def test_a_new_version_of_a_segment_replaces_the_old_rows(stack, sink):
    """Re-recorded under the same name with another size (and fewer frames): the old rows go, counted without FINAL."""
    assert persist(sink) == PersistResult(inserted=ROWS, outboxed=0)
    assert counts(sink) == EXACT
    shorter = FRAMES - 5
    persist(sink, size=9999, frames=shorter)
    assert counts(sink) == (1, shorter * 5)
    with sink.connect() as ch:
        assert ch.query("SELECT bytes FROM {db}.segments") == [(9999,)]
    # The same write again (a retry) changes nothing; the old version coming back replaces the new.
    persist(sink, size=9999, frames=shorter)
    assert counts(sink) == (1, shorter * 5)
    persist(sink)
    assert counts(sink) == EXACT
    with sink.connect() as ch:
        assert ch.query("SELECT bytes FROM {db}.segments") == [(4096,)]


@pytest.mark.faults(
    fault="ClickHouse gateway down mid-run, then back",
    state="Completed",
    message="warning per batch: `<ClickHouse error>; n rows kept in the outbox <folder>, flush-outbox will "
    "send them`; the flush: `outbox: n batches sent, 0 still waiting`",
    data="after the scheduled flush, every segment and detection once",
)
def test_pipeline_survives_a_clickhouse_outage(stack):
    """The gateway goes down while recorder_pipeline persists; the outbox and a flush make the counts exact."""
    from core.settings import outbox_dir
    from flows.persist import flush_outbox
    from flows.pipeline import recorder_pipeline
    from stack.supervisor import start_service, stop_service

    recorder = "nvr-03"
    start, end = demo_window()
    # A database of its own: the counts below are this run's, whatever other tests stored.
    sink_block = f"outage-{uuid.uuid4().hex[:8]}"
    probe = ClickHouseSink(
        url=stack.clickhouse_url,
        password=SecretStr(stack.clickhouse_password),
        database=sink_block.replace("-", "_"),
    )
    probe.save(sink_block)
    with probe.connect() as ch:
        ch.migrate()
        assert ch.query("SELECT count() FROM {db}.segments WHERE recorder = {r:String}", {"r": recorder}) == [
            (0,)
        ]
    assert list(outbox_dir().glob("*.json")) == []

    finished = threading.Event()
    stopped_after: list[int] = []

    def stop_once_some_are_persisted() -> None:
        # The first persisted segment, not a delay, decides when ClickHouse goes away.
        with probe.connect() as ch:
            while not finished.is_set():
                n = ch.query(
                    "SELECT count() FROM {db}.segments WHERE recorder = {r:String}", {"r": recorder}
                )[0][0]
                if n:
                    stopped_after.append(n)
                    break
                time.sleep(0.1)
        if stopped_after:
            stop_service("clickhouse-gateway", stack.data_dir)

    watcher = threading.Thread(target=stop_once_some_are_persisted, daemon=True)
    watcher.start()
    try:
        summary = recorder_pipeline(recorder, start, end, model_block=CLASSIFIER, sink_block=sink_block)
    finally:
        finished.set()
        watcher.join(timeout=60)
        start_service("clickhouse-gateway", stack.data_dir)

    assert stopped_after, "the pipeline finished before any segment was persisted"
    assert summary["failed"] == [] and summary["persisted"] == summary["segments"] == 8
    waiting = sorted(outbox_dir().glob("*.json"))
    assert waiting, f"every segment was persisted before the outage ({stopped_after})"

    assert flush_outbox(sink_block) == {"sent": len(waiting), "remaining": 0}
    assert list(outbox_dir().glob("*.json")) == []
    seconds = int((end - start).total_seconds())
    with probe.connect() as ch:
        where = {"r": recorder}
        segments = ch.query("SELECT count() FROM {db}.segments WHERE recorder = {r:String}", where)[0][0]
        detections, frames = ch.query(
            "SELECT count(), uniqExact(channel, frame_time) FROM {db}.detections WHERE recorder = {r:String}",
            where,
        )[0]
        hourly_frames = ch.query(
            "SELECT sum(frames) FROM {db}.detections_hourly WHERE recorder = {r:String}", where
        )[0][0]
    print(f"outage after {stopped_after[0]} segment(s); outbox held {len(waiting)} batches")
    assert segments == 8
    assert frames == 2 * seconds
    assert detections == 2 * seconds * 5
    assert hourly_frames == 2 * seconds


def test_migrate_command_applies_then_does_nothing(stack, capsys):
    """`python -m flows.migrate` against a sink block on the stack, with a database of its own."""
    from flows.migrate import main

    block = f"migrate-{uuid.uuid4().hex[:8]}"
    database = block.replace("-", "_")
    ClickHouseSink(
        url=stack.clickhouse_url, password=SecretStr(stack.clickhouse_password), database=database
    ).save(block)
    assert main(["--sink-block", block]) == 0
    assert capsys.readouterr().out.splitlines() == [f"applied: {m.name}" for m in MIGRATIONS]
    assert main(["--sink-block", block]) == 0
    assert capsys.readouterr().out.strip() == "schema up to date: nothing applied"
