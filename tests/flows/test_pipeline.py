"""The whole chain against the stack's simulator, ClickHouse gateway and model server."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from stack.simulator.spec import demo_window, load_spec
from tests.support import CLASSIFIER, simulated_port, sink

pytestmark = pytest.mark.stack

# What EfficientNet-Lite0 (ImageNet-1k) must see in each simulated scene, top-1 per frame.
EXPECTED = {
    "cat": ("tabby", "tiger cat", "egyptian cat", "persian cat", "lynx"),
    "coffee": ("espresso", "cup", "coffee mug", "eggnog"),
    "motorcycle": ("moped", "motor scooter", "crash helmet", "disk brake"),
    "rocket": ("missile", "projectile", "space shuttle", "rocket"),
}


def _scenes(stack) -> dict[tuple[str, int], str]:
    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    return {(r.name, c.id): c.scene for r in spec.recorders for c in r.channels}


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def nvr01_run(stack):
    from flows.pipeline import recorder_pipeline

    start, end = demo_window()
    summary = recorder_pipeline("nvr-01", start, end, model_block=CLASSIFIER)
    return summary, start, end


def test_pipeline_persists_every_segment(nvr01_run, stack):
    summary, start, end = nvr01_run
    assert summary["failed"] == []
    # 2 channels x 4 whole segments in the window (the simulator records one more either side).
    assert summary["segments"] == summary["persisted"] == 8
    with sink() as ch:
        rows = ch.query(
            "SELECT channel, count(), min(start), max(end), sum(duration_s) FROM {db}.segments FINAL "
            "WHERE recorder = 'nvr-01' GROUP BY channel ORDER BY channel"
        )
        detections = ch.query(
            "SELECT count(), uniqExact(frame_time), max(rank) FROM {db}.detections FINAL WHERE recorder = 'nvr-01'"
        )[0]
    assert [(r[0], r[1]) for r in rows] == [(1, 4), (2, 4)]
    for _ch, _n, first, last, seconds in rows:
        assert first.replace(tzinfo=None) == start.replace(tzinfo=None)
        assert last.replace(tzinfo=None) == end.replace(tzinfo=None)
        assert abs(seconds - (end - start).total_seconds()) <= 4
    total, frames, max_rank = detections
    assert max_rank == 5
    # One frame per second per channel, five labels each.
    assert frames == (end - start).total_seconds()
    assert total == 2 * frames * 5


def test_outputs_are_web_playable_h264(nvr01_run, stack):
    from video.mp4 import top_level_boxes

    with sink() as ch:
        rows = ch.query(
            "SELECT output_path, source_codec, transcode_mode, duration_s FROM {db}.segments FINAL "
            "WHERE recorder = 'nvr-01'"
        )
    assert {(r[1], r[2]) for r in rows} == {("h264", "remux"), ("hevc", "x264")}
    for path, _codec, _mode, duration in rows:
        mp4 = Path(path)
        info = _ffprobe(mp4)
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        assert video and video[0]["codec_name"] == "h264"
        assert abs(float(info["format"]["duration"]) - duration) < 1.0
        boxes = top_level_boxes(mp4)
        assert boxes.index("moov") < boxes.index("mdat"), f"{mp4.name}: {boxes}"
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        assert all(a["codec_name"] == "aac" for a in audio)


def test_labels_match_the_pictures(nvr01_run, stack):
    scenes = _scenes(stack)
    with sink() as ch:
        rows = ch.query(
            "SELECT channel, label, count() AS n FROM {db}.detections FINAL "
            "WHERE recorder = 'nvr-01' AND rank = 1 GROUP BY channel, label ORDER BY channel, n DESC"
        )
    by_channel: dict[int, list[tuple[str, int]]] = {}
    for channel, label, n in rows:
        by_channel.setdefault(channel, []).append((label, n))
    for channel, counts in by_channel.items():
        expected = EXPECTED[scenes[("nvr-01", channel)]]
        total = sum(n for _, n in counts)
        hits = sum(n for label, n in counts if any(e in label.lower() for e in expected))
        assert hits >= 0.8 * total, f"channel {channel} ({scenes[('nvr-01', channel)]}): {counts}"


def test_rerun_redoes_nothing_and_adds_no_rows(nvr01_run, stack):
    from flows.pipeline import recorder_pipeline

    _, start, end = nvr01_run
    with sink() as ch:
        before = ch.query("SELECT count() FROM {db}.detections WHERE recorder = 'nvr-01'")[0][0]
    summary = recorder_pipeline("nvr-01", start, end, model_block=CLASSIFIER)
    assert summary["reused"] == {"download": 8, "transcode": 8, "classify": 8}, summary
    with sink() as ch:
        after = ch.query("SELECT count() FROM {db}.detections WHERE recorder = 'nvr-01'")[0][0]
    # Without FINAL: the deduplication token, not a background merge, kept the count.
    assert after == before


def test_deployment_run_from_cli(stack):
    """`prefect deployment run` against the stack: the worker executes it."""
    start, end = demo_window()
    prefect = str(Path(sys.executable).parent / "prefect")
    done = subprocess.run(
        [prefect, "deployment", "run", "recorder-pipeline/recorder", "--param", "recorder=nvr-02",
         "--param", f"start={start.isoformat()}", "--param", f"end={end.isoformat()}", "--watch",
         "--watch-timeout", "600"],
        capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Completed" in done.stdout
    with sink() as ch:  # (other tests may run nvr-02 over other windows: this one's rows only)
        count = ch.query(
            "SELECT count() FROM {db}.segments FINAL WHERE recorder = 'nvr-02' "
            "AND start >= {s:DateTime64(3, 'UTC')} AND start < {e:DateTime64(3, 'UTC')}",
            {"s": start.replace(tzinfo=None), "e": end.replace(tzinfo=None)},
        )[0][0]
    assert count == 8


def test_wrong_password_fails_at_once_naming_the_recorder(stack):
    from flows.pipeline import recorder_pipeline
    from stack.simulator import control

    port = simulated_port(stack, "nvr-03")
    control.reset_stats(port)
    control.set_faults(port, wrong_password=True)
    try:
        start, end = demo_window()
        state = recorder_pipeline("nvr-03", start, end, channels=[1], return_state=True)
    finally:
        control.reset_faults(port)
    assert state.is_failed()
    assert "wrong credentials for recorder nvr-03" in state.message
    # One search, no retry: the digest challenge and the rejected answer.
    assert sum(control.stats(port)["requests_by_path"].values()) <= 3


def test_transient_errors_are_retried(stack):
    from flows.pipeline import recorder_pipeline
    from stack.simulator import control

    port = simulated_port(stack, "nvr-03")
    control.set_faults(port, fail_next=2, error_status=503)
    try:
        start, end = demo_window()
        summary = recorder_pipeline("nvr-03", start, end, channels=[2])
    finally:
        control.reset_faults(port)
    assert summary["persisted"] == summary["segments"] == 4
    assert control.stats(port)["errors_injected"] >= 2


def test_bad_downloads_fail_their_segments_and_are_named(stack):
    from flows.pipeline import recorder_pipeline
    from stack.simulator import control

    port = simulated_port(stack, "nvr-03")
    control.set_faults(port, wrong_size=True)
    # The segment recorded just before the demo window: no other test downloads (and caches) it.
    window_start, _ = demo_window()
    try:
        state = recorder_pipeline(
            "nvr-03", window_start - timedelta(seconds=20), window_start, channels=[1], return_state=True
        )
    finally:
        control.reset_faults(port)
    assert state.is_failed()
    assert "nvr-03: 1 of 1 segments failed" in state.message
    assert "CorruptDownload" in state.message
