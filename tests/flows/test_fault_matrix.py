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
from tests.support import CLASSIFIER, run_logs, sink, task_runs

pytestmark = pytest.mark.stack

START = datetime(2026, 10, 27, 14, 0, 0, tzinfo=UTC)
SEGMENT_SECONDS = 4
SEGMENTS = 2
END = START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
FRAMES = SEGMENT_SECONDS  # sampled at 1 fps
TOP_K = 5
ROWS = ("offline", "gone", "slow", "5xx", "truncated", "password", "model", "corrupt", "full", "clock")


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

    return recorder_pipeline(f"fm-{row}", START, END, model_block=CLASSIFIER, return_state=True)


def _logs(flow_run_id) -> list[str]:
    """Every log line of the run once the API has them all (up to the flow's own last line)."""
    return run_logs(flow_run_id, containing="Finished in state")


def _retry_lines(state) -> list[str]:
    """The retry lines Prefect logged for the run's task runs ("Task run failed with ... - Retry n/m")."""
    return [line for line in _logs(state.state_details.flow_run_id) if " - Retry " in line]


def _rows(row: str) -> tuple[dict[tuple[int, str], int], int, int]:
    """(channel, segment) -> segment rows, detections, distinct (channel, frame, rank): no FINAL."""
    where = {"r": f"fm-{row}"}
    with sink() as ch:
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


def _completes_once(row: str):
    """A run of the row's window Completed, and its rows each there once; returns the run's state."""
    state = _run(row)
    assert state.is_completed(), state.message
    _assert_complete_once(row)
    return state


def _warnings(flow_run_id) -> list[str]:
    """The run's log lines at WARNING or above, as the Prefect API holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    _logs(flow_run_id)  # all arrived
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=30)
            )
        )
    return [log.message for log in logs]


@contextmanager
def _faults(port: int, **faults: object) -> Iterator[None]:
    """The recorder's faults set for the block, cleared after it whatever happens."""
    control.set_faults(port, **faults)
    try:
        yield
    finally:
        control.reset_faults(port)


@contextmanager
def _clear_when(port: int, what: str, seen: Callable[[dict], bool]) -> Iterator[None]:
    """Clear the recorder's faults once its counters show the fault was met (not after a delay).

    The block fails (in the test, not in the watching thread) when the fault was never met: a
    run that completes without meeting it proves nothing about the fault.
    """
    met, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            while not done.is_set():
                if seen(control.stats(port)):
                    met.set()
                    control.reset_faults(port)
                    return
                done.wait(0.05)
        except BaseException as exc:  # handed to the test below
            errors.append(exc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=30)
        control.reset_faults(port)
    assert not errors, f"watching for {what} failed: {errors[0]!r}"
    assert met.is_set(), f"{what}: never seen in the recorder's counters {control.stats(port)}"


@pytest.mark.faults(
    fault="recorder offline, back within the retries",
    state="Completed",
    message="search retried: `RecorderUnavailable` in the task's retry log, nothing on the run",
    data="every segment once",
)
def test_an_offline_recorder_back_within_the_retries(fleet):
    port = fleet["offline"]
    control.reset_stats(port)
    control.set_faults(port, offline=True)
    with _clear_when(
        port, "a request dropped while offline", lambda s: sum(s["offline_by_path"].values()) >= 1
    ):
        state = _run("offline")
    assert state.is_completed(), state.message
    _assert_complete_once("offline")
    (retried,) = _retry_lines(state)
    assert "RecorderUnavailable" in retried and "fm-offline" in retried, retried
    assert "RecorderUnavailable" not in (state.message or ""), state.message
    (search,) = task_runs(state.state_details.flow_run_id, "search")
    assert search.run_count == 2, search  # the attempt the recorder dropped, then one served


@pytest.mark.faults(
    fault="recorder offline for good",
    state="Failed after the search's 5 attempts (waits 2/4/8/16 s)",
    message="`Flow run encountered an exception: RecorderUnavailable: connection lost during GET "
    "/ISAPI/System/time: ... (recorder fm-gone)`",
    data="nothing",
)
def test_a_recorder_offline_for_good_fails_the_run_after_its_retries(fleet):
    port = fleet["gone"]
    control.reset_stats(port)
    with _faults(port, offline=True):
        state = _run("gone")
    assert state.is_failed()
    told = "Flow run encountered an exception: RecorderUnavailable: connection lost during GET /ISAPI/System/time"
    assert state.message.startswith(told) and state.message.endswith("(recorder fm-gone)"), state.message
    (search,) = task_runs(state.state_details.flow_run_id, "search")
    assert search.run_count == 5, search
    # Each attempt's first request dropped, nothing served.
    stats = control.stats(port)
    assert (stats["offline_by_path"], stats["requests_by_path"]) == ({"/ISAPI/System/time": 5}, {}), stats
    assert _rows("gone")[0] == {}


@pytest.mark.faults(
    fault="recorder slow (1.5 s before every answer)",
    state="Completed",
    message="none: slower, within the read timeout",
    data="every segment once",
)
def test_a_slow_recorder(fleet):
    with _faults(fleet["slow"], latency_ms=1500):
        state = _completes_once("slow")
    # Nothing to tell: no task run was retried, and the run logged no warning.
    flow_run_id = state.state_details.flow_run_id
    runs = task_runs(flow_run_id, "")
    assert runs and all(run.run_count == 1 for run in runs), [(r.name, r.run_count) for r in runs]
    assert _warnings(flow_run_id) == []


@pytest.mark.faults(
    fault="recorder answers 500 three times",
    state="Completed",
    message="retried: `RecorderUnavailable` (HTTP 500 ... deviceBusy) in the task's retry log",
    data="every segment once",
)
def test_server_errors_are_retried(fleet):
    with _faults(fleet["5xx"], fail_next=3, error_status=500):
        state = _completes_once("5xx")
    assert control.stats(fleet["5xx"])["errors_injected"] == 3
    retried = _retry_lines(state)
    assert len(retried) == 3, retried
    for line in retried:
        assert "RecorderUnavailable" in line and "HTTP 500" in line and "deviceBusy" in line, line


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
    assert "wrong credentials for recorder fm-password (user 'admin')" in refused.message, refused.message
    # One try: the digest challenge and the refused answer (a fresh challenge at most), no retry.
    assert sum(control.stats(port)["requests_by_path"].values()) <= 3, control.stats(port)
    (search,) = task_runs(refused.state_details.flow_run_id, "search")
    assert search.run_count == 1, search
    assert _rows("password")[0] == {}
    _completes_once("password")


@pytest.mark.faults(
    fault="download body cut short, then whole",
    state="Completed",
    message="download retried: `RecorderUnavailable` (connection lost during POST /ISAPI/ContentMgmt/download: "
    "peer closed connection ... (received n bytes, expected N)) in the task's retry log; no partial file kept",
    data="every segment once",
)
def test_a_truncated_download_is_retried_whole(fleet, data_dir):
    port = fleet["truncated"]
    control.reset_stats(port)
    control.set_faults(port, drop_after_bytes=1500)
    with _clear_when(port, "a download cut short", lambda s: s["downloads_failed"] >= 1):
        state = _run("truncated")
    assert state.is_completed(), state.message
    exports = data_dir / "exports" / "fm-truncated"
    assert len([p for p in exports.rglob("*.ps") if p.is_file()]) == SEGMENTS, exports  # where they land
    assert not list(exports.rglob("*.part"))
    _assert_complete_once("truncated")
    retried = _retry_lines(state)
    cut = "peer closed connection without sending complete message body (received 1500 bytes, expected "
    assert retried, retried
    for line in retried:
        assert "RecorderUnavailable('connection lost during POST /ISAPI/ContentMgmt/download" in line, line
        assert cut in line and "recorder fm-truncated" in line, line


@pytest.mark.faults(
    fault="model server down, then back",
    state="Failed at its model check (3 attempts, ~6 s), then Completed on a re-run",
    message="`model efficientnet_lite0 at <host:port>: GetModelMetadata failed: UNAVAILABLE: ...`",
    data="nothing downloaded while it is down; after the re-run every segment once",
)
def test_the_model_server_down_then_back(fleet):
    from blocks.model_server import TFServingModel
    from stack.supervisor import start_service, stop_service

    stop_service("model-server")
    try:
        down = _run("model")
    finally:
        start_service("model-server")
    assert down.is_failed()
    model = TFServingModel.load(CLASSIFIER)
    told = f"model {model.model_name} at {model.target}: GetModelMetadata failed: UNAVAILABLE"
    assert told in down.message, down.message
    (check,) = task_runs(down.state_details.flow_run_id, "check model")
    assert check.run_count == 3, check
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
    exports = small_data_folder / "exports" / "fm-full"
    assert exports.is_dir(), sorted(small_data_folder.rglob("*"))  # where the exports were being written
    left = [p for p in exports.rglob("*") if p.is_file()]
    assert left == [], left
    assert _rows("full")[0] == {}
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_data_folder)], check=True, timeout=30)
    _completes_once("full")
    assert len([p for p in exports.rglob("*") if p.is_file()]) == SEGMENTS  # the same look finds them now


@pytest.mark.faults(
    fault="recorder clock 3 h ahead",
    state="Completed",
    message="warning on every search: `fm-clock: its clock is 3 h 00 min ahead of this machine's; ...`",
    data="every segment once, in the recorder's own time",
)
def test_a_recorder_clock_hours_off_is_reported(fleet):
    with _faults(fleet["clock"], clock_offset_s=3 * 3600):
        state = _completes_once("clock")
    flow_run_id = state.state_details.flow_run_id
    warnings = [line for line in _warnings(flow_run_id) if "its clock is" in line]
    searches = task_runs(flow_run_id, "search")
    assert len(warnings) == len(searches) >= 1, (warnings, [s.name for s in searches])
    assert all(w.startswith("fm-clock: its clock is 3 h 00 min ahead of this machine's") for w in warnings), (
        warnings
    )


def test_the_readme_carries_this_matrix():
    from tests.fault_matrix import README, render

    table = render()
    assert table.count("\n") >= 14, table
    assert table in README.read_text(), "README's fault matrix is not in step: python -m tests.fault_matrix"
