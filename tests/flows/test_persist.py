"""Exactly-once persistence: token deduplication, the outbox across an outage, retries after a crash."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from blocks.clickhouse import Batch, ClickHouseSink
from blocks.clickhouse_outbox import flush
from blocks.clickhouse_schema import HOURLY_SUMMARY_SQL, MIGRATIONS
from core.segment import Segment
from flows.persist import PersistResult, persist_batches, segment_batches
from stack.simulator.spec import demo_window
from tests.gateway_process import Gateway
from video.classify import Classification, Detection
from video.transcode import TranscodeResult

pytestmark = [
    pytest.mark.stack,  # the Prefect API of the stack records the task runs
    # persist_task runs outside a flow here; its log lines cannot reach the API then.
    pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"),
]

PASSWORD = "persist-" + uuid.uuid4().hex
START = datetime(2024, 5, 6, 10, 59, 50, tzinfo=UTC)
FRAMES = 20


@pytest.fixture
def gateway(tmp_path) -> Iterator[Gateway]:
    with Gateway(tmp_path / "clickhouse", PASSWORD) as gw:
        yield gw


@pytest.fixture
def sink(gateway) -> ClickHouseSink:
    sink = gateway.sink("nvr")
    with sink.connect() as writer:
        writer.migrate()
    return sink


def one_segment(now: datetime | None = None, size: int = 4096, frames: int = FRAMES) -> list[Batch]:
    """The batches `persist_segment` sends for one 20 s segment across an hour boundary."""
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
    return segment_batches(segment, result, classification, "site", "run-1", now)


# persist_batches logs through the run logger, as inside `persist_segment`.
persist_task = task(name="persist-test", cache_policy=NO_CACHE)(persist_batches)


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


def test_outage_goes_to_the_outbox_and_flush_sends_it_once(stack, gateway, sink, tmp_path, caplog):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    batches = one_segment()
    gateway.stop()

    with caplog.at_level(logging.WARNING):
        state = persist_task(sink, batches, outbox, return_state=True)
    assert state.is_completed(), state
    assert state.result() == PersistResult(inserted=0, outboxed=1 + FRAMES * 5)
    assert any("outbox" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)

    files = sorted(outbox.iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)  # no temp file left behind
    stored = [json.loads(f.read_text()) for f in files]
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
    # The task's own retry, now that the server is back, adds nothing either.
    assert persist_task(sink, one_segment(), outbox) == PersistResult(inserted=1 + FRAMES * 5, outboxed=0)
    assert counts(sink) == EXACT
    assert hourly(sink) == EXACT_HOURLY


def test_retry_after_a_crash_between_insert_and_completion_adds_nothing(stack, sink, tmp_path):
    """The insert reached the server but the task died before it finished: the retry sends it again."""
    first = one_segment(datetime(2024, 5, 6, 12, tzinfo=UTC))
    assert persist_task(sink, first, tmp_path) == PersistResult(inserted=1 + FRAMES * 5, outboxed=0)
    # A retried task builds its batches anew: same tokens, a later inserted_at.
    retry = one_segment(datetime(2024, 5, 6, 12, 5, tzinfo=UTC))
    assert retry[1].rows[0].inserted_at != first[1].rows[0].inserted_at
    for batches in (first, retry):
        persist_task(sink, batches, tmp_path)
    assert counts(sink) == EXACT
    assert hourly(sink) == EXACT_HOURLY
    assert list(tmp_path.glob("*.json")) == []


def test_a_new_version_of_a_segment_replaces_the_old_rows(stack, sink, tmp_path):
    """Re-recorded under the same name with another size (and fewer frames): the old rows go, counted without FINAL."""
    assert persist_task(sink, one_segment(), tmp_path) == PersistResult(inserted=1 + FRAMES * 5, outboxed=0)
    assert counts(sink) == EXACT
    shorter = FRAMES - 5
    newer = one_segment(size=9999, frames=shorter)
    persist_task(sink, newer, tmp_path)
    assert counts(sink) == (1, shorter * 5)
    with sink.connect() as ch:
        assert ch.query("SELECT bytes FROM {db}.segments") == [(9999,)]
    # The same write again (a retry) changes nothing; the old version coming back replaces the new.
    persist_task(sink, newer, tmp_path)
    assert counts(sink) == (1, shorter * 5)
    persist_task(sink, one_segment(), tmp_path)
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
    probe = ClickHouseSink(url=stack.clickhouse_url, password=SecretStr(stack.clickhouse_password))
    with probe.connect() as ch:
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
        summary = recorder_pipeline(recorder, start, end)
    finally:
        finished.set()
        watcher.join(timeout=60)
        start_service("clickhouse-gateway", stack.data_dir)

    assert stopped_after, "the pipeline finished before any segment was persisted"
    assert summary["failed"] == [] and summary["persisted"] == summary["segments"] == 8
    waiting = sorted(outbox_dir().glob("*.json"))
    assert waiting, f"every segment was persisted before the outage ({stopped_after})"

    assert flush_outbox() == {"sent": len(waiting), "remaining": 0}
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
