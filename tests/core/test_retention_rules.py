"""Retention's decisions, directly: by age, by budget oldest first, never a file whose rows are not
persisted; exports a while after their segment's row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.isapi.naming import segment_path
from core.retention import (
    ExportFile,
    export_key,
    oldest_day,
    persisted_files,
    plan_exports,
    plan_store,
    store_kind,
    summary_rows,
)
from core.segment import Segment
from core.store import clip_key, row_clip_key, thumbnail_key

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)


def entry(key: str, size: int, age: timedelta) -> ExportFile:
    return ExportFile(key, size, NOW - age)


def clip(n: int) -> str:
    return f"clips/nvr-01/1/2026-11-{n:02d}/seg{n}.mp4"


def thumb(n: int) -> str:
    return f"thumbnails/nvr-01/1/2026-11-{n:02d}/obj{n}.jpg"


def keys(plan) -> list[tuple[str, str]]:
    return [(d.key, d.reason) for d in plan.deletions]


def test_age_deletes_persisted_files_older_than_keep_days_only():
    entries = [
        entry(clip(1), 100, 40 * DAY),
        entry(thumb(1), 10, 40 * DAY),
        entry(clip(2), 100, 29 * DAY),
        entry(thumb(2), 10, 2 * DAY),
    ]
    plan = plan_store(entries, {clip(1), thumb(1), clip(2), thumb(2)}, NOW, keep_days=30, budget_bytes=10**9)
    assert keys(plan) == [(clip(1), "age"), (thumb(1), "age")]
    assert [d.what for d in plan.deletions] == ["clip", "thumbnail"]
    assert (plan.bytes_before, plan.bytes_after, plan.over_budget) == (220, 110, 0)


def test_over_budget_the_oldest_go_first_until_it_fits():
    entries = [entry(clip(n), 100, (10 - n) * DAY) for n in range(1, 6)]  # clip(1) oldest
    plan = plan_store(entries, {clip(n) for n in range(1, 6)}, NOW, keep_days=30, budget_bytes=250)
    assert keys(plan) == [(clip(1), "budget"), (clip(2), "budget"), (clip(3), "budget")]
    assert plan.bytes_after == 200 and plan.over_budget == 0


def test_age_first_then_budget_counts_what_age_already_freed():
    entries = [entry(clip(1), 100, 50 * DAY), entry(clip(2), 100, 5 * DAY), entry(clip(3), 100, DAY)]
    plan = plan_store(entries, {clip(1), clip(2), clip(3)}, NOW, keep_days=30, budget_bytes=150)
    assert keys(plan) == [(clip(1), "age"), (clip(2), "budget")]


def test_a_file_whose_rows_are_not_persisted_is_never_deleted():
    entries = [
        entry(clip(1), 100, 90 * DAY),  # no segments row (its rows wait in the outbox)
        entry(thumb(1), 10, 90 * DAY),  # no objects row names it
        entry(clip(2), 100, DAY),
    ]
    plan = plan_store(entries, {clip(2)}, NOW, keep_days=30, budget_bytes=50)
    assert keys(plan) == [(clip(2), "budget")]
    assert plan.unpersisted == 2
    assert plan.over_budget == 60  # 110 bytes left against 50: what is left is not ours to delete


def test_files_of_other_kinds_count_against_the_budget_but_are_never_deleted():
    entries = [
        entry("notes/readme.txt", 500, 400 * DAY),
        entry("clips/nvr-01/1/2026-11-01/seg1.mov", 50, 400 * DAY),
        entry(clip(3), 100, DAY),
    ]
    every = {e.key for e in entries}
    plan = plan_store(entries, every, NOW, keep_days=30, budget_bytes=600)
    assert keys(plan) == [(clip(3), "budget")]
    assert plan.over_budget == 0 and plan.bytes_after == 550
    assert store_kind("notes/readme.txt") is None and store_kind(clip(3)) == "clip"


def test_within_budget_and_age_nothing_goes():
    entries = [entry(clip(1), 100, DAY), entry(thumb(1), 10, DAY)]
    plan = plan_store(entries, {clip(1), thumb(1)}, NOW, keep_days=30, budget_bytes=110)
    assert plan.deletions == [] and plan.bytes_after == 110


def test_exports_go_a_while_after_their_segment_was_persisted_never_before():
    exports = [
        entry("nvr-01/1/2026-11-30/a.ps", 7, 3 * DAY),  # persisted 25 h ago
        entry("nvr-01/1/2026-11-30/b.ps", 7, 3 * DAY),  # persisted 23 h ago
        entry("nvr-01/1/2026-11-30/c.ps", 7, 30 * DAY),  # no segments row, however old
        entry("nvr-01/1/2026-11-30/d.part", 7, 30 * DAY),  # a download in progress
    ]
    persisted_at = {
        "nvr-01/1/2026-11-30/a.ps": NOW - timedelta(hours=25),
        "nvr-01/1/2026-11-30/b.ps": NOW - timedelta(hours=23),
        "nvr-01/1/2026-11-30/d.part": NOW - 30 * DAY,
    }
    chosen = plan_exports(exports, persisted_at, NOW, keep_hours=24)
    assert [(d.what, d.key, d.reason) for d in chosen] == [
        ("export", "nvr-01/1/2026-11-30/a.ps", "persisted")
    ]
    assert len(plan_exports(exports, persisted_at, NOW, keep_hours=0)) == 2


def test_row_keys_are_the_keys_files_were_written_under(tmp_path: Path):
    start = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)
    recording = Segment.of_recording("nvr-01", 2, "ch02 0001", start, start + timedelta(minutes=10), 5)
    assert row_clip_key("nvr-01", 2, "ch02 0001", start) == clip_key(recording)
    ingested = Segment.of_file("upload", "cam.mp4", "ab" * 32, 5, start)
    assert row_clip_key("upload", 0, ingested.name, start) == clip_key(ingested)
    download = segment_path(tmp_path, "nvr-01", 2, start, "ch02 0001")
    assert export_key("nvr-01", 2, "ch02 0001", start) == download.relative_to(tmp_path.resolve()).as_posix()

    store, exports = persisted_files(
        [
            ("nvr-01", 2, "ch02 0001", start, NOW - DAY),
            ("nvr-01", 2, "___", start, NOW),
        ],  # no file has that name
        [thumbnail_key(recording, "person-1")],
    )
    assert store == {clip_key(recording), thumbnail_key(recording, "person-1")}
    assert exports == {export_key("nvr-01", 2, "ch02 0001", start): NOW - DAY}


def test_the_oldest_date_folder_bounds_the_rows_read():
    assert oldest_day([clip(12), thumb(3), "nvr-01/1/2026-11-05/a.ps"]) == datetime(2026, 11, 3, tzinfo=UTC)
    assert oldest_day([clip(12), "clips/odd/place.mp4"]) is None
    assert oldest_day([]) is None


def test_the_summary_counts_files_and_bytes_per_kind_and_reason():
    plan = plan_store(
        [entry(clip(1), 2_000_000, 40 * DAY), entry(clip(2), 1_000_000, 40 * DAY), entry(thumb(2), 10, DAY)],
        {clip(1), clip(2), thumb(2)},
        NOW,
        keep_days=30,
        budget_bytes=0,
    )
    assert summary_rows(plan.deletions) == [
        {"what": "clip", "reason": "age", "files": 2, "MB": 3.0},
        {"what": "thumbnail", "reason": "budget", "files": 1, "MB": 0.0},
    ]


@pytest.mark.parametrize("value", ["0", "-3", "many", "nan", "inf"])
def test_a_bad_setting_names_its_variable(monkeypatch, value):
    from core.settings import store_budget_gb, store_keep_days

    monkeypatch.setenv("NVRFLOW_STORE_BUDGET_GB", value)
    with pytest.raises(ValueError, match="NVRFLOW_STORE_BUDGET_GB"):
        store_budget_gb()
    monkeypatch.setenv("NVRFLOW_STORE_KEEP_DAYS", "2.5")
    assert store_keep_days() == 2.5
    monkeypatch.delenv("NVRFLOW_STORE_KEEP_DAYS")
    assert store_keep_days() == 30
