"""Single-file ingest: the `ingest-video` flow, and the event-triggered deployment fed by the watcher."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stack.paths import PROJECT_ROOT
from stack.simulator.footage import ensure_clip
from tests.support import CLASSIFIER, sink

COFFEE = ("espresso", "cup", "coffee mug", "eggnog")


@pytest.fixture(scope="module")
def clip() -> Path:
    return ensure_clip("coffee", "h264", "none", 4, width=320, height=240, fps=10)


# --- the flow, in process, against the stack ---------------------------------------------------


def _counts(source: str) -> tuple[int, int]:
    with sink() as ch:
        segments = ch.query("SELECT count() FROM {db}.segments WHERE recorder = {s:String}", {"s": source})[
            0
        ][0]
        detections = ch.query(
            "SELECT count() FROM {db}.detections WHERE recorder = {s:String}", {"s": source}
        )[0][0]
    return segments, detections


@pytest.mark.stack
def test_ingest_persists_rows_and_a_web_mp4(stack, clip, tmp_path):
    from flows.ingest import ingest_video
    from video.mp4 import is_faststart
    from video.probe import probe

    src = tmp_path / "kitchen cam 'one'.hik"
    shutil.copyfile(clip, src)
    start = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    summary = ingest_video(str(src), model_block=CLASSIFIER, source="t-ingest", start=start)

    assert not src.exists()
    kept = Path(summary["kept_as"])
    assert kept.parent == stack.data_dir / "ingest" / "done" and kept.read_bytes() == clip.read_bytes()
    mp4 = Path(summary["output"])
    assert mp4.parent == stack.data_dir / "mp4" / "t-ingest" / "2026-11-01"
    out = probe(mp4)
    assert out.video_codec == "h264" and abs(out.duration_s - 4) < 1 and is_faststart(mp4)
    assert summary["mode"] == "remux" and summary["frames"] == 4

    with sink() as ch:
        (row,) = ch.query(
            "SELECT channel, segment, start, end, bytes, output_path FROM {db}.segments FINAL WHERE recorder = 't-ingest'"
        )
        top1 = ch.query(
            "SELECT frame_time, label FROM {db}.detections FINAL WHERE recorder = 't-ingest' AND rank = 1 ORDER BY frame_time"
        )
    channel, segment, first, last, size, output = row
    assert channel == 0 and segment == f"{summary['sha256'][:16]}-kitchen_cam_one"
    assert first.replace(tzinfo=UTC) == start and abs((last - first).total_seconds() - 4) < 1
    assert size == len(clip.read_bytes()) and output == str(mp4)
    assert len(top1) == 4 and top1[0][0].replace(tzinfo=UTC) == start
    assert sum(any(e in label.lower() for e in COFFEE) for _, label in top1) >= 3, top1


@pytest.mark.stack
def test_shell_metacharacters_in_an_ingested_name_run_nothing_and_stay_inside_the_data_folder(
    stack, clip, tmp_path
):
    from flows.ingest import ingest_video

    src = tmp_path / "cam $(touch${IFS}nvrflow-pwned);`touch nvrflow-pwned`|x & y.hik"
    shutil.copyfile(clip, src)
    summary = ingest_video(str(src), model_block=CLASSIFIER, source="t-hostile-name")

    kept, mp4 = Path(summary["kept_as"]), Path(summary["output"])
    assert kept.parent == stack.data_dir / "ingest" / "done" and kept.read_bytes() == clip.read_bytes()
    assert mp4.is_relative_to(stack.data_dir / "mp4" / "t-hostile-name") and mp4.is_file()
    with sink() as ch:
        (segment,) = ch.query("SELECT segment FROM {db}.segments WHERE recorder = 't-hostile-name'")[0]
    assert segment == f"{summary['sha256'][:16]}-cam_touch_IFS_nvrflow-pwned_touch_nvrflow-pwned_x_y"
    for folder in (Path.cwd(), PROJECT_ROOT, stack.data_dir, tmp_path):
        assert not list(folder.rglob("nvrflow-pwned")), folder  # nothing ran the name


@pytest.mark.stack
def test_a_source_name_that_climbs_out_is_refused_and_the_file_stays(stack, clip, tmp_path):
    from flows.ingest import ingest_video

    src = tmp_path / "cam.hik"
    shutil.copyfile(clip, src)
    with pytest.raises(ValueError, match=r"source '\.\./\.\./etc': use 1-64 letters"):
        ingest_video(str(src), model_block=CLASSIFIER, source="../../etc")
    assert src.read_bytes() == clip.read_bytes()


@pytest.mark.stack
def test_ingesting_the_same_content_again_adds_no_rows(stack, clip, tmp_path):
    from flows.ingest import ingest_video

    first = tmp_path / "again.hik"
    shutil.copyfile(clip, first)
    ingest_video(str(first), model_block=CLASSIFIER, source="t-again")
    before = _counts("t-again")
    # Same bytes, another name and modification time.
    second = tmp_path / "again renamed.hik"
    shutil.copyfile(clip, second)
    summary = ingest_video(str(second), model_block=CLASSIFIER, source="t-again")
    assert summary["inserted"] > 0  # sent again; the server's deduplication dropped it
    # Frames fall on whole seconds of the clip's (mtime) start: 3 or 4 of them, 5 labels each.
    assert _counts("t-again") == before and before[0] == 1 and before[1] in (15, 20)


@pytest.mark.stack
def test_a_corrupt_file_is_set_aside_with_its_reason(stack, clip, tmp_path):
    from flows.ingest import ingest_video

    src = tmp_path / "broken.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4096))
    state = ingest_video(str(src), model_block=CLASSIFIER, source="t-broken", return_state=True)

    assert state.is_failed()
    assert not src.exists()
    failed = stack.data_dir / "ingest" / "failed"
    kept = sorted(failed.glob("broken*.mp4"))[-1]
    reason = kept.with_name(kept.name + ".reason.txt").read_text()
    assert kept.stat().st_size == 4096 + 12
    assert "CorruptMedia" in reason and str(src) in reason and "not usable as video" in reason
    assert _counts("t-broken") == (0, 0)


# --- end to end: watcher process -> Prefect event -> automation -> worker -------------------


def _lines(proc: subprocess.Popen) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no {needle!r} from the watcher in {timeout} s:\n{''.join(seen)}")


def _triggered_run(deployment_id, path: Path, timeout: float):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout
    last = None
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            mine = [r for r in runs if r.parameters.get("path") == str(path)]
            if mine:
                last = mine[0]
                if last.state and last.state.is_final():
                    return mine
            time.sleep(1)  # polling an API for a state: there is nothing to wait on
    raise AssertionError(f"no finished ingest-video run for {path} in {timeout} s; last seen: {last}")


@pytest.mark.stack
def test_a_file_dropped_in_a_watched_folder_is_ingested_by_the_deployment(stack, clip, tmp_path):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("ingest-video/on-arrival")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    proc = subprocess.Popen(  # noqa: S603 - fixed argument list
        [sys.executable, "-m", "inbox.watch", "--folder", str(inbox), "--source", "t-e2e", "--settle", "0.5"],
        cwd=PROJECT_ROOT, env=os.environ | stack.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = _lines(proc)
        _wait_for_line(lines, "watching", 60)
        dropped = (inbox / "drop cam.hik").resolve()
        shutil.copyfile(clip, dropped)
        _wait_for_line(lines, "arrived", 30)
        runs = _triggered_run(deployment.id, dropped, timeout=240)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert len(runs) == 1, [r.name for r in runs]
    assert runs[0].state.is_completed(), runs[0].state
    assert runs[0].parameters["source"] == "t-e2e"
    assert rc == 0
    assert not dropped.exists()
    assert list((stack.data_dir / "ingest" / "done").glob("drop cam*.hik"))
    # The deployment looks with the default model, the detector: the still photograph has no one
    # in it, so the segment's row is all there is.
    segments, detections = _counts("t-e2e")
    assert (segments, detections) == (1, 0)
    assert runs[0].state.result()["frames"] == 4
