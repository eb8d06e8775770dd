"""Classifying from the recorder's sub-stream (`classify_from="sub"`).

The recorder of this module records, on channel 1, a sub-stream whose pictures are another
scene than the main stream's (cat over coffee): the labels then show which stream the classify
stage read. Channel 2 records no sub-stream and is classified from its main stream.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stack.simulator import control
from stack.simulator.footage import ensure_clip
from tests.own_recorder import PASSWORD, one_channel_spec
from tests.support import CLASSIFIER

START = datetime(2026, 10, 29, 8, 0, 0, tzinfo=UTC)
SEGMENT_SECONDS = 4
SEGMENTS = 2
END = START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
TOP_K = 5
CAT = ("tabby", "tiger cat", "egyptian cat", "persian cat", "lynx")
COFFEE = ("espresso", "cup", "coffee mug", "eggnog")


def _recording(channel: int, start_s: int, end_s: int, stream: int = 1):
    from blocks.recorder import Recording

    return Recording(
        recorder="r", channel=channel, track_id=channel * 100 + stream,
        start=START + timedelta(seconds=start_s), end=START + timedelta(seconds=end_s),
        playback_uri=f"rtsp://x/{channel}{stream}/{start_s}", name=f"{channel}{stream}{start_s}", size=1,
        codec="H.264",
    )  # fmt: skip


def test_a_sub_stream_file_stands_in_only_where_it_covers_the_main_one():
    from flows.export import covering_sub_streams

    main = [_recording(1, 0, 60), _recording(1, 60, 120), _recording(1, 120, 180), _recording(2, 0, 60)]
    subs = [
        _recording(1, 0, 61, stream=2),  # a second past the end: within the slack
        _recording(1, 90, 120, stream=2),  # a gap over the first half: not a stand-in
        _recording(1, 119, 181, stream=2),
        _recording(3, 0, 60, stream=2),  # another channel's
    ]
    assert covering_sub_streams(main, subs) == {main[0]: subs[0], main[2]: subs[2]}


def _labels(recorder: str, channel: int) -> tuple[int, list[str], set[datetime]]:
    from blocks.clickhouse import ClickHouseSink

    where = {"r": recorder, "c": channel}
    with ClickHouseSink.load("nvrflow").connect() as ch:
        rows = ch.query(
            "SELECT label, rank, frame_time FROM {db}.detections WHERE recorder = {r:String} "
            "AND channel = {c:UInt16}",
            where,
        )
    return len(rows), [r[0] for r in rows if r[1] == 1], {r[2].replace(tzinfo=UTC) for r in rows}


def _share(labels: list[str], expected: tuple[str, ...]) -> float:
    return sum(any(e in label.lower() for e in expected) for label in labels) / max(len(labels), 1)


@pytest.mark.stack
def test_the_classify_stage_reads_the_sub_stream_where_the_recorder_records_one(stack, tmp_path, caplog):
    from pydantic import SecretStr

    from blocks.recorder import HikvisionRecorder
    from flows.pipeline import recorder_pipeline
    from flows.recorders import upsert_recorder
    from video.probe import probe

    sub = ensure_clip("cat", "h264", "none", SEGMENT_SECONDS, 160, 120, 10)
    spec = one_channel_spec("substream-01", START, END, SEGMENT_SECONDS, scene="coffee", sub_stream="160x120",
                            sub_clip=str(sub))  # fmt: skip
    recorder = spec["recorders"][0]
    recorder["channels"].append({"id": 2, "scene": "coffee", "codec": "h264", "audio": "none"})
    block = HikvisionRecorder(host="127.0.0.1", port=recorder["port"], password=SecretStr(PASSWORD),
                              channels=[1, 2], classify_from="sub")  # fmt: skip
    upsert_recorder("substream-01", block)

    with control.running(spec, tmp_path):
        summary = recorder_pipeline("substream-01", START, END, model_block=CLASSIFIER)
        stats = control.stats(recorder["port"])

    assert summary["persisted"] == 2 * SEGMENTS and summary["failed"] == [], summary
    # Each channel-1 segment's sub-stream file is downloaded beside its main one.
    assert stats["downloads_completed"] == 3 * SEGMENTS, stats
    instants = {START + timedelta(seconds=s) for s in range(SEGMENT_SECONDS * SEGMENTS)}
    detections, labels, times = _labels("substream-01", 1)
    # Channel 1's labels are the sub-stream's scene, at the main stream's instants, once each.
    assert (detections, times) == (len(instants) * TOP_K, instants)
    assert _share(labels, CAT) >= 0.8, labels
    # Its MP4s are the main stream's.
    mp4s = sorted((stack.data_dir / "mp4" / "substream-01").rglob("*.mp4"))
    assert len(mp4s) == 2 * SEGMENTS and {probe(m).width for m in mp4s} == {320}
    # Channel 2 records no sub-stream: classified from its main stream, and the run says so.
    detections, labels, times = _labels("substream-01", 2)
    assert (detections, times) == (len(instants) * TOP_K, instants)
    assert _share(labels, COFFEE) >= 0.8, labels
    assert any(
        f"{SEGMENTS} of {2 * SEGMENTS} segments have no sub-stream recording" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
