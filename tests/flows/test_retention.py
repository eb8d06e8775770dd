"""`retention` against the stack's ClickHouse: exactly the right files go, the unpersisted ones stay,
every deletion is recorded once, and an unreachable ClickHouse means nothing is deleted."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from blocks.clickhouse import Batch, ClickHouseSink
from blocks.clickhouse_schema import ObjectRow, SegmentRow
from core.retention import export_key
from core.segment import Segment
from core.store import clip_key, thumbnail_key
from stack.ports import free_port

pytestmark = pytest.mark.stack

CLIP, THUMB = 1000, 100
DAY = timedelta(days=1)


def segment(recorder: str, name: str, start: datetime) -> Segment:
    return Segment.of_recording(recorder, 1, name, start, start + timedelta(minutes=10), CLIP)


def segment_row(seg: Segment, persisted_at: datetime) -> SegmentRow:
    return SegmentRow(
        recorder=seg.source, site="s", channel=seg.channel, segment=seg.name, start=seg.start,
        end=seg.end or seg.start, duration_s=600.0, bytes=seg.size, source_codec="h264",
        transcode_mode="remux", output_path="", flow_run_id="test", exported_at=persisted_at,
        version_key=f"segments/{seg.key}",
    )  # fmt: skip


def object_row(seg: Segment, object_id: str) -> ObjectRow:
    return ObjectRow(
        recorder=seg.source, site="s", channel=seg.channel, segment=seg.name, object_id=object_id,
        label="person", start=seg.start, end=seg.start, best_score=0.9, best_time=seg.start,
        x0=0, y0=0, x1=1, y1=1, frame_width=640, frame_height=360, frames=3, clip=clip_key(seg),
        clip_offset_s=0.0, thumbnail=thumbnail_key(seg, object_id), model="m", model_version=1,
        inserted_at=seg.start, version_key=f"objects/{seg.key}",
    )  # fmt: skip


def put(path: Path, size: int, age: timedelta, now: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    at = (now - age).timestamp()
    os.utime(path, (at, at))


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def setup(stack, tmp_path, monkeypatch):
    """A store block and an exports folder of the test's own, and recorder names no other test uses."""
    data = tmp_path / "data"
    monkeypatch.setenv("NVRFLOW_DATA", str(data))
    store_block = f"retention-{uuid.uuid4().hex[:8]}"
    LocalFileSystem(basepath=str(tmp_path / "store")).save(store_block, overwrite=True)
    return tmp_path / "store", data / "exports", store_block, f"ret-{uuid.uuid4().hex[:6]}"


def test_age_then_budget_oldest_first_never_unpersisted_recorded_once(setup):
    from flows.retention import retention

    store, exports, store_block, recorder = setup
    now = datetime.now(UTC)
    a = segment(recorder, "seg-a", datetime(2026, 10, 20, 8, tzinfo=UTC))  # persisted, old
    b = segment(recorder, "seg-b", datetime(2026, 11, 20, 8, tzinfo=UTC))  # persisted, recent
    c = segment(recorder, "seg-c", datetime(2026, 10, 1, 8, tzinfo=UTC))  # rows not persisted (outbox)
    d = segment(recorder, "seg-d", datetime(2026, 11, 21, 8, tzinfo=UTC))  # persisted, newest
    put(store / clip_key(a), CLIP, 40 * DAY, now)
    put(store / thumbnail_key(a, "p1"), THUMB, 40 * DAY, now)
    put(store / thumbnail_key(a, "p2"), THUMB, 40 * DAY, now)  # its objects row is not persisted
    put(store / clip_key(b), CLIP, 3 * DAY, now)
    put(store / thumbnail_key(b, "p1"), THUMB, 3 * DAY + timedelta(minutes=1), now)
    put(store / clip_key(c), CLIP, 60 * DAY, now)
    put(store / clip_key(d), CLIP, DAY, now)
    for seg in (a, b, c):
        put(exports / export_key(seg.source, seg.channel, seg.name, seg.start), 5000, 2 * DAY, now)

    sink = ClickHouseSink.load("nvrflow")
    with sink.connect() as ch:
        for seg, at in ((a, now - 2 * DAY), (b, now - timedelta(hours=1)), (d, now - DAY)):
            row = segment_row(seg, at)
            ch.write(Batch(SegmentRow.TABLE, row.version_key, (row,), (seg.source, seg.channel, seg.name)))
        objects = (object_row(a, "p1"), object_row(b, "p1"))
        ch.insert(ObjectRow.TABLE, objects, f"objects/{recorder}")

    # 4300 bytes in the store: age takes a's clip and p1 (1100); over 2500, b's p1 then b's clip go.
    result = retention(keep_days=30, budget_gb=2500 / 10**9, exports_keep_hours=24,
                       video_store_block=store_block, sink_block="nvrflow")  # fmt: skip

    assert files_under(store) == {thumbnail_key(a, "p2"), clip_key(c), clip_key(d)}
    export_a = export_key(a.source, a.channel, a.name, a.start)
    assert files_under(exports) == {
        export_key(b.source, b.channel, b.name, b.start),  # persisted an hour ago
        export_key(c.source, c.channel, c.name, c.start),  # no segments row
    }
    assert result["deleted"] == 5 and result["store_bytes"] == 2100 and result["over_budget_bytes"] == 0
    assert result["unpersisted"] == 2

    every_key = [clip_key(s) for s in (a, b, c, d)] + [
        thumbnail_key(s, p) for s in (a, b) for p in ("p1", "p2")
    ]
    every_key.append(str(exports / export_a))
    with sink.connect() as ch:
        recorded = {(r.what, r.key, r.reason, r.bytes) for r in ch.deletions_of(every_key)}
        run_ids = {r.flow_run_id for r in ch.deletions_of(every_key)}
    assert recorded == {
        ("clip", clip_key(a), "age", CLIP),
        ("thumbnail", thumbnail_key(a, "p1"), "age", THUMB),
        ("thumbnail", thumbnail_key(b, "p1"), "budget", THUMB),
        ("clip", clip_key(b), "budget", CLIP),
        ("export", str(exports / export_a), "persisted", 5000),
    }
    assert len(run_ids) == 1 and run_ids != {""}

    again = retention(keep_days=30, budget_gb=2500 / 10**9, exports_keep_hours=24,
                      video_store_block=store_block, sink_block="nvrflow")  # fmt: skip
    assert again["deleted"] == 0
    assert files_under(store) == {thumbnail_key(a, "p2"), clip_key(c), clip_key(d)}
    with sink.connect() as ch:  # without FINAL: a second copy of any row would show
        stored = ch.query(
            "SELECT count() FROM {db}.deletions WHERE key IN {keys:Array(String)}", {"keys": every_key}
        )
    assert stored[0][0] == 5


def test_clickhouse_unreachable_deletes_nothing_and_says_why(setup):
    from flows.retention import RetentionBlocked, retention

    store, exports, store_block, recorder = setup
    now = datetime.now(UTC)
    old = segment(recorder, "seg-old", datetime(2026, 9, 1, tzinfo=UTC))
    put(store / clip_key(old), CLIP, 400 * DAY, now)
    put(exports / export_key(old.source, old.channel, old.name, old.start), 10, 400 * DAY, now)
    down = f"retention-down-{uuid.uuid4().hex[:6]}"
    ClickHouseSink(url=f"http://127.0.0.1:{free_port()}", connect_timeout=1).save(down, overwrite=True)

    with pytest.raises(RetentionBlocked, match="nothing deleted.*unreachable"):
        retention(keep_days=1, budget_gb=1e-9, video_store_block=store_block, sink_block=down)
    assert files_under(store) == {clip_key(old)}
    assert len(files_under(exports)) == 1


def test_the_daily_deployment_runs_at_night_with_its_parameters_explained(stack):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retention/daily")
    assert [s.schedule.cron for s in deployment.schedules] == ["50 3 * * *"]
    form = deployment.parameter_openapi_schema["properties"]
    assert set(form) == {"keep_days", "budget_gb", "exports_keep_hours", "video_store_block", "sink_block"}
    assert "NVRFLOW_STORE_KEEP_DAYS" in form["keep_days"]["description"]
    assert "NVRFLOW_STORE_BUDGET_GB" in form["budget_gb"]["description"]
    assert form["exports_keep_hours"]["default"] == 24
