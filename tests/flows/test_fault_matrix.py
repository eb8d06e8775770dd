"""The fault matrix: one fault injected into a running pipeline per row, the outcome checked once
it clears: the run's final state, what the operator is told, and the rows afterwards, counted
without FINAL (every segment once, every sampled frame's labels once) or the missing part named.

Each row has a recorder of its own on one simulator of this module's, so no row's cache or rows
touch another's. The rows' expectations are in the `faults` markers; `tests/fault_matrix.py`
renders them, with the rows kept in other modules, into the README's table.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stack.ports import free_port
from stack.simulator import control
from stack.simulator.footage import ensure_clip
from tests.own_recorder import PASSWORD, register
from tests.polling import wait_until

pytestmark = pytest.mark.stack

START = datetime(2026, 10, 27, 14, 0, 0, tzinfo=UTC)
SEGMENT_SECONDS = 4
SEGMENTS = 2
END = START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
FRAMES = SEGMENT_SECONDS  # sampled at 1 fps
TOP_K = 5
ROWS = ("offline", "slow", "5xx", "truncated", "password", "model", "corrupt", "full", "clock")


def _recorder(row: str, channels: list[dict]) -> dict:
    return {
        "name": f"fm-{row}", "port": free_port(), "username": "admin", "password": PASSWORD,
        "segment_seconds": SEGMENT_SECONDS, "recording_start": START.replace(tzinfo=None).isoformat(),
        "recording_end": END.replace(tzinfo=None).isoformat(), "channels": channels,
    }  # fmt: skip


def _corrupt_clip(folder: Path) -> Path:
    """A segment whose bytes are a recording's header and start, then noise: damaged footage."""
    good = ensure_clip("coffee", "h264", "none", SEGMENT_SECONDS, 320, 240, 10).read_bytes()
    clip = folder / "corrupt.ps"
    clip.write_bytes(good[:2048] + bytes((i * 131 + 7) % 251 for i in range(len(good) - 2048)))
    return clip


@pytest.fixture(scope="module")
def fleet(stack, tmp_path_factory) -> Iterator[dict[str, int]]:
    """Row -> the port of its recorder, registered and running for the module."""
    folder = tmp_path_factory.mktemp("fault-matrix")
    good = {"id": 1, "scene": "coffee", "codec": "h264", "audio": "none"}
    recorders = [_recorder(row, [good]) for row in ROWS if row != "corrupt"]
    recorders.append(_recorder("corrupt", [good, {**good, "id": 2, "clip": str(_corrupt_clip(folder))}]))
    spec = {"width": 320, "height": 240, "fps": 10, "recorders": recorders}
    for recorder in recorders:
        register({**spec, "recorders": [recorder]}, channels=[c["id"] for c in recorder["channels"]])
    with control.running(spec, folder):
        yield {r["name"].removeprefix("fm-"): r["port"] for r in recorders}


def _run(row: str):
    from flows.pipeline import recorder_pipeline

    return recorder_pipeline(f"fm-{row}", START, END, return_state=True)


def _rows(row: str) -> tuple[dict[tuple[int, str], int], int, int]:
    """(channel, segment) -> segment rows, detections, distinct (channel, frame, rank): no FINAL."""
    from blocks.clickhouse import ClickHouseSink

    where = {"r": f"fm-{row}"}
    with ClickHouseSink.load("nvrflow").connect() as ch:
        segments = ch.query(
            "SELECT channel, segment, count() FROM {db}.segments WHERE recorder = {r:String} "
            "GROUP BY channel, segment",
            where,
        )
        detections, distinct = ch.query(
            "SELECT count(), uniqExact(channel, frame_time, rank) FROM {db}.detections WHERE recorder = {r:String}",
            where,
        )[0]
    return {(c, s): n for c, s, n in segments}, detections, distinct


def _assert_complete_once(row: str, channels: int = 1) -> None:
    segments, detections, distinct = _rows(row)
    assert len(segments) == SEGMENTS * channels and set(segments.values()) == {1}, segments
    assert detections == distinct == SEGMENTS * channels * FRAMES * TOP_K, (detections, distinct)


def _completes_once(row: str) -> None:
    """A run of the row's window Completed, and its rows each there once."""
    state = _run(row)
    assert state.is_completed(), state.message
    _assert_complete_once(row)


@contextmanager
def _faults(port: int, **faults: object) -> Iterator[None]:
    """The recorder's faults set for the block, cleared after it whatever happens."""
    control.set_faults(port, **faults)
    try:
        yield
    finally:
        control.reset_faults(port)


def _clear_when(port: int, seen: Callable[[dict], bool]) -> threading.Thread:
    """Clear the recorder's faults once its counters show the fault was met (not after a delay)."""

    def watch() -> None:
        wait_until("the fault met", lambda: seen(control.stats(port)), 120, every=0.05)
        control.reset_faults(port)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


@pytest.mark.faults(
    fault="recorder offline, back within the retries",
    state="Completed",
    message="search retried: `RecorderUnavailable` in the task's retry log, nothing on the run",
    data="every segment once",
)
def test_an_offline_recorder_back_within_the_retries(fleet):
    port = fleet["offline"]
    control.set_faults(port, offline=True)
    watcher = _clear_when(port, lambda s: sum(s["requests_by_path"].values()) >= 1)
    state = _run("offline")
    watcher.join()
    assert state.is_completed(), state.message
    _assert_complete_once("offline")


@pytest.mark.faults(
    fault="recorder slow (1.5 s before every answer)",
    state="Completed",
    message="none: slower, within the read timeout",
    data="every segment once",
)
def test_a_slow_recorder(fleet):
    with _faults(fleet["slow"], latency_ms=1500):
        _completes_once("slow")


@pytest.mark.faults(
    fault="recorder answers 500 three times",
    state="Completed",
    message="retried: `RecorderUnavailable` (HTTP 500 ... deviceBusy) in the task's retry log",
    data="every segment once",
)
def test_server_errors_are_retried(fleet):
    with _faults(fleet["5xx"], fail_next=3, error_status=500):
        _completes_once("5xx")
    assert control.stats(fleet["5xx"])["errors_injected"] == 3


@pytest.mark.faults(
    fault="wrong password, then corrected",
    state="Failed at once (not retried), then Completed on a re-run",
    message="`wrong credentials for recorder fm-password (user 'admin') ...`",
    data="nothing while refused; after the re-run every segment once",
)
def test_a_wrong_password_fails_at_once_and_a_rerun_completes(fleet):
    port = fleet["password"]
    control.reset_stats(port)
    with _faults(port, wrong_password=True):
        refused = _run("password")
    assert refused.is_failed()
    assert "wrong credentials for recorder fm-password" in refused.message, refused.message
    # One try: the digest challenge and the refused answer, no retry.
    assert sum(control.stats(port)["requests_by_path"].values()) <= 3, control.stats(port)
    assert _rows("password")[0] == {}
    _completes_once("password")


@pytest.mark.faults(
    fault="download body cut short, then whole",
    state="Completed",
    message="download retried: `CorruptDownload` (received n of N bytes); no partial file kept",
    data="every segment once",
)
def test_a_truncated_download_is_retried_whole(fleet, data_dir):
    port = fleet["truncated"]
    control.set_faults(port, drop_after_bytes=1500)
    watcher = _clear_when(port, lambda s: s["downloads_failed"] >= 1)
    state = _run("truncated")
    watcher.join()
    assert state.is_completed(), state.message
    assert not list((data_dir / "exports" / "fm-truncated").rglob("*.part"))
    _assert_complete_once("truncated")


@pytest.mark.faults(
    fault="model server down, then back",
    state="Failed at its model check (3 attempts, ~6 s), then Completed on a re-run",
    message="`model efficientnet_lite0 at <host:port>: GetModelMetadata failed: UNAVAILABLE: ...`",
    data="nothing downloaded while it is down; after the re-run every segment once",
)
def test_the_model_server_down_then_back(fleet):
    from stack.supervisor import start_service, stop_service

    stop_service("model-server")
    try:
        down = _run("model")
    finally:
        start_service("model-server")
    assert down.is_failed()
    assert "GetModelMetadata failed: UNAVAILABLE" in down.message, down.message
    assert _rows("model")[0] == {}
    assert control.stats(fleet["model"])["downloads_completed"] == 0  # checked before any download
    _completes_once("model")


@pytest.mark.faults(
    fault="corrupt video on one channel",
    state="Failed",
    message="`fm-corrupt: 2 of 4 segments failed:` each channel-2 segment named with `CorruptMedia` "
    "and ffmpeg's words",
    data="channel 1's segments once; channel 2's named in the failure, no rows",
)
def test_corrupt_video_fails_its_segments_only(fleet):
    state = _run("corrupt")
    assert state.is_failed()
    assert f"fm-corrupt: {SEGMENTS} of {2 * SEGMENTS} segments failed" in state.message, state.message
    assert state.message.count("CorruptMedia") == SEGMENTS, state.message
    segments, detections, distinct = _rows("corrupt")
    assert {channel for channel, _ in segments} == {1} and set(segments.values()) == {1}, segments
    assert len(segments) == SEGMENTS and detections == distinct == SEGMENTS * FRAMES * TOP_K


@pytest.fixture
def small_data_folder(tmp_path, monkeypatch) -> Iterator[Path]:
    """NVRFLOW_DATA on a 64 KiB tmpfs (too small for one export); unmounted afterwards."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True, timeout=30)
    monkeypatch.setenv("NVRFLOW_DATA", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True, timeout=30)


@pytest.mark.faults(
    fault="data folder full, then grown",
    state="Failed, then Completed on a re-run",
    message="`fm-full: 2 of 2 segments failed:` each named with `[Errno 28] No space left on device`",
    data="no partial export kept; after the re-run every segment once",
)
def test_a_full_data_folder(fleet, small_data_folder):
    full = _run("full")
    assert full.is_failed()
    assert f"fm-full: {SEGMENTS} of {SEGMENTS} segments failed" in full.message, full.message
    assert full.message.count("No space left on device") == SEGMENTS, full.message
    left = [p for p in (small_data_folder / "exports").rglob("*") if p.is_file()]
    assert left == [], left
    assert _rows("full")[0] == {}
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_data_folder)], check=True, timeout=30)
    _completes_once("full")


@pytest.mark.faults(
    fault="recorder clock 3 h ahead",
    state="Completed",
    message="warning on every search: `fm-clock: its clock is 3 h 00 min ahead of this machine's; ...`",
    data="every segment once, in the recorder's own time",
)
def test_a_recorder_clock_hours_off_is_reported(fleet, caplog):
    with _faults(fleet["clock"], clock_offset_s=3 * 3600), caplog.at_level("WARNING"):
        _completes_once("clock")
    warnings = [r.getMessage() for r in caplog.records if "its clock is" in r.getMessage()]
    assert warnings and warnings[0].startswith("fm-clock: its clock is 3 h 00 min ahead"), warnings


def test_the_readme_carries_this_matrix():
    from tests.fault_matrix import README, render

    table = render()
    assert table.count("\n") >= 14, table
    assert table in README.read_text(), "README's fault matrix is not in step: python -m tests.fault_matrix"
