"""Segment identity: what each key holds, and that every stage key moves with what shapes its output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.model_server import TFServingModel
from core.segment import INGEST_CHANNEL, Segment, check_source, content_sha256, stage_key
from flows.classify import classify_key
from flows.export import download_key
from flows.transcode import transcode_key
from video.transcode import TranscodeOptions, TranscodeResult

START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def recording(size: int = 1000, name: str = "00100001") -> Segment:
    return Segment.of_recording("nvr-01", 2, name, START, START + timedelta(seconds=20), size)


def model(**changes) -> TFServingModel:
    return TFServingModel(**({"model_name": "m", "labels": ["cat", "dog"]} | changes))


def mp4(segment: Segment, options: TranscodeOptions | None = None) -> TranscodeResult:
    key = transcode_key(segment, options or TranscodeOptions())
    return TranscodeResult(Path("/x.mp4"), "remux", "h264", 20.0, False, key)


def test_a_recording_is_known_by_recorder_channel_name_and_size():
    assert recording().key == "nvr-01/2/00100001/1000"
    assert recording().label == "nvr-01 ch2 00100001"
    assert recording(size=1001).key != recording().key


def test_an_ingested_file_is_known_by_source_and_content(tmp_path):
    path = tmp_path / "kitchen cam.mp4"
    path.write_bytes(b"abc")
    sha = content_sha256(path)
    one = Segment.of_file("upload", path.name, sha, 3, START)
    other_name = Segment.of_file("upload", "renamed.mp4", sha, 3, START + timedelta(hours=1))
    assert one.key == other_name.key == f"ingest/upload/{sha}"
    assert one.channel == INGEST_CHANNEL and one.name == f"{sha[:16]}-kitchen_cam"
    with pytest.raises(ValueError, match="source"):
        check_source("../etc")


def test_every_stage_key_changes_with_the_segment_and_its_own_version():
    seg, newer = recording(), recording(size=2000)
    assert download_key(seg) != download_key(newer)
    assert transcode_key(seg, TranscodeOptions()) != transcode_key(newer, TranscodeOptions())
    assert classify_key(seg, mp4(seg), model(), 1, 1.0) != classify_key(newer, mp4(newer), model(), 1, 1.0)
    assert stage_key(seg, "transcode", 1) != stage_key(seg, "transcode", 2)


def test_transcode_key_holds_what_shapes_the_mp4_and_nothing_else():
    seg = recording()
    base = transcode_key(seg, TranscodeOptions())
    assert transcode_key(seg, TranscodeOptions(crf=28)) != base
    assert transcode_key(seg, TranscodeOptions(audio="drop")) != base
    assert transcode_key(seg, TranscodeOptions(timeout_s=5)) == base


def test_classify_key_holds_mp4_model_version_labels_top_k_size_and_rate():
    seg = recording()
    base = classify_key(seg, mp4(seg), model(), 1, 1.0)
    assert classify_key(seg, mp4(seg, TranscodeOptions(crf=30)), model(), 1, 1.0) != base
    assert classify_key(seg, mp4(seg), model(), 2, 1.0) != base
    assert classify_key(seg, mp4(seg), model(), 1, 0.5) != base
    assert classify_key(seg, mp4(seg), model(top_k=3), 1, 1.0) != base
    assert classify_key(seg, mp4(seg), model(input_size=192), 1, 1.0) != base
    assert classify_key(seg, mp4(seg), model(labels=["cat", "wolf"]), 1, 1.0) != base
    # How frames are sent (batch size, deadline) does not change a label.
    assert classify_key(seg, mp4(seg), model(batch_size=16, timeout_seconds=5), 1, 1.0) == base


def test_one_mp4_path_for_recordings_and_ingested_files(tmp_path):
    from core.segment import mp4_path

    start = datetime(2026, 11, 1, 23, 59, tzinfo=UTC)
    recording = Segment.of_recording("nvr-01", 2, "00200000001", start, start, 100)
    assert (
        mp4_path(recording, tmp_path)
        == tmp_path.resolve() / "nvr-01" / "2" / "2026-11-01" / "00200000001.mp4"
    )
    ingested = Segment.of_file("upload", "cam 1.mp4", "ab" * 32, 10, start)
    assert (
        mp4_path(ingested, tmp_path) == tmp_path.resolve() / "upload" / "2026-11-01" / f"{ingested.name}.mp4"
    )
    hostile = Segment.of_recording("nvr-01", 1, "../../../etc/passwd", start, start, 1)
    assert mp4_path(hostile, tmp_path).is_relative_to(tmp_path.resolve())
    with pytest.raises(ValueError, match="no usable characters"):
        mp4_path(Segment.of_recording("nvr-01", 1, "///", start, start, 1), tmp_path)
