"""The rows a segment and a run's ledger become, and the tokens they are inserted under."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.segment import Segment
from flows.persist import segment_batches, window_batches
from video.classify import Classification, Detection
from video.transcode import TranscodeResult

T0 = datetime(2026, 11, 1, 2, tzinfo=UTC)
NOW = datetime(2026, 11, 2, tzinfo=UTC)


def test_a_segments_rows_carry_the_tokens_of_the_stages_that_made_them():
    segment = Segment.of_recording("nvr-t", 2, "seg-1", T0, T0 + timedelta(seconds=20), 999)
    transcoded = TranscodeResult(Path("/data/mp4/seg-1.mp4"), "remux", "h264", 20.0, False, "transcode/v1/x")
    labels = Classification("m", 3, 2, [Detection(T0, 1, "cat", 0.9), Detection(T0 + timedelta(seconds=1), 1, "cat", 0.8)],
                            key="classify/v1/y")  # fmt: skip
    seg_batch, det_batch = segment_batches(segment, transcoded, labels, "depot", "run-1", NOW)
    assert (seg_batch.table, seg_batch.token, seg_batch.scope) == (
        "segments",
        "segments/transcode/v1/x",
        ("nvr-t", 2, "seg-1"),
    )
    (row,) = seg_batch.rows
    assert (row.site, row.bytes, row.output_path, row.version_key) == (
        "depot",
        999,
        "/data/mp4/seg-1.mp4",
        seg_batch.token,
    )
    assert (det_batch.table, det_batch.token) == ("detections", "detections/classify/v1/y")
    assert [(d.frame_time, d.model_version, d.version_key) for d in det_batch.rows] == [
        (T0, 3, det_batch.token), (T0 + timedelta(seconds=1), 3, det_batch.token),
    ]  # fmt: skip


def test_an_ingested_segment_without_an_end_ends_after_its_duration():
    segment = Segment.of_file("upload", "a.mp4", "ab" * 32, 10, T0)
    transcoded = TranscodeResult(Path("/x.mp4"), "encode", "hevc", 12.5, False, "t")
    (seg_batch, _) = segment_batches(segment, transcoded, Classification("m", 1, 0, []), "", "run", NOW)
    assert seg_batch.rows[0].end == T0 + timedelta(seconds=12.5)


def test_each_complete_window_is_one_ledger_row_under_the_windows_own_token():
    complete = {(2, T0 + timedelta(hours=1)): 3, (1, T0): 0}
    batches = window_batches("nvr-t", complete, "run-9", NOW)
    assert [b.token for b in batches] == [
        f"windows/nvr-t/1/{T0.isoformat()}",
        f"windows/nvr-t/2/{(T0 + timedelta(hours=1)).isoformat()}",
    ]
    assert [(r.channel, r.hour, r.segments, r.flow_run_id) for b in batches for r in b.rows] == [
        (1, T0, 0, "run-9"), (2, T0 + timedelta(hours=1), 3, "run-9"),
    ]  # fmt: skip
    # Another run completing the same window inserts under the same token: deduplicated.
    assert [b.token for b in window_batches("nvr-t", complete, "run-10", NOW)] == [b.token for b in batches]
