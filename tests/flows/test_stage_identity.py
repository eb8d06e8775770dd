"""One segment identity through every stage, and the retry policy seen from a running pipeline.

- a segment re-recorded under the same name with another size is downloaded, transcoded and
  classified again, and its rows replace the old ones (counted without FINAL); a cached
  download or MP4 is used only where its file is (another data folder runs those stages again);
- a model that does not match its block fails the run after one attempt, naming the setting;
- a recorder account without the download right fails with a permissions error, no retry;
- a recorder that refuses the download's method gets the request in another documented form.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest

from stack.simulator import control
from stack.simulator.footage import ensure_clip
from stack.simulator.spec import demo_window
from tests.own_recorder import one_channel_spec, register
from tests.support import CLASSIFIER, register_alias, simulated_port, sink

pytestmark = pytest.mark.stack

START = datetime(2026, 11, 3, 6, 0, 0, tzinfo=UTC)
SEGMENT_SECONDS = 4
SEGMENTS = 2
CAT = ("tabby", "tiger cat", "egyptian cat", "persian cat", "lynx")
COFFEE = ("espresso", "cup", "coffee mug", "eggnog")


def _rows(recorder: str) -> tuple[int, int, set[int], list[str]]:
    """Segments and detections counted without FINAL, the sizes stored, the rank-1 labels."""
    with sink() as ch:
        where = {"r": recorder}
        segments = ch.query("SELECT count() FROM {db}.segments WHERE recorder = {r:String}", where)[0][0]
        detections = ch.query("SELECT count() FROM {db}.detections WHERE recorder = {r:String}", where)[0][0]
        sizes = {r[0] for r in ch.query("SELECT bytes FROM {db}.segments WHERE recorder = {r:String}", where)}
        labels = [
            r[0]
            for r in ch.query(
                "SELECT label FROM {db}.detections WHERE recorder = {r:String} AND rank = 1", where
            )
        ]
    return segments, detections, sizes, labels


def _share(labels: list[str], expected: tuple[str, ...]) -> float:
    return sum(any(e in label.lower() for e in expected) for label in labels) / max(len(labels), 1)


def test_a_re_recorded_segment_runs_every_stage_again_and_replaces_its_rows(stack, tmp_path, monkeypatch):
    from flows.pipeline import recorder_pipeline

    clip = tmp_path / "channel-1.ps"
    shutil.copyfile(ensure_clip("cat", "h264", "none", SEGMENT_SECONDS, 320, 240, 10), clip)
    end = START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
    spec = one_channel_spec("rerec-01", START, end, SEGMENT_SECONDS, scene="cat", clip=str(clip))
    register(spec)
    port = spec["recorders"][0]["port"]

    with control.running(spec, tmp_path):
        names = [s["name"] for s in control.segments(port)]
        first = recorder_pipeline("rerec-01", START, end, model_block=CLASSIFIER)
    assert first["persisted"] == SEGMENTS and first["failed"] == []
    segments, detections, sizes, labels = _rows("rerec-01")
    assert (segments, detections, sizes) == (SEGMENTS, SEGMENTS * SEGMENT_SECONDS * 5, {clip.stat().st_size})
    assert _share(labels, CAT) >= 0.8, labels

    # The recorder overwrites its footage: same names and times, other pictures, another size.
    shutil.copyfile(ensure_clip("coffee", "h264", "none", SEGMENT_SECONDS, 320, 240, 10), clip)
    assert clip.stat().st_size not in sizes
    with control.running(spec, tmp_path):
        assert [s["name"] for s in control.segments(port)] == names
        second = recorder_pipeline("rerec-01", START, end, model_block=CLASSIFIER)
        third = recorder_pipeline("rerec-01", START, end, model_block=CLASSIFIER)
        # A cached result names a file: without the file here, the stage runs again.
        export = next((stack.data_dir / "exports" / "rerec-01").rglob(f"{names[0]}.ps"))
        mp4 = next((stack.data_dir / "mp4" / "rerec-01").rglob(f"{names[0]}.mp4"))
        export.unlink()
        mp4.unlink()
        fourth = recorder_pipeline("rerec-01", START, end, model_block=CLASSIFIER)
        assert export.is_file() and mp4.is_file()
        # Another data folder (another machine's): its own exports and MP4s, the same labels.
        with monkeypatch.context() as elsewhere:
            elsewhere.setenv("NVRFLOW_DATA", str(tmp_path / "other-host"))
            fifth = recorder_pipeline("rerec-01", START, end, model_block=CLASSIFIER)
        assert list((tmp_path / "other-host" / "mp4" / "rerec-01").rglob("*.mp4"))
    assert second["persisted"] == SEGMENTS
    assert second["reused"] == {"download": 0, "transcode": 0, "classify": 0}, second
    segments, detections, sizes, labels = _rows("rerec-01")
    assert (segments, detections, sizes) == (SEGMENTS, SEGMENTS * SEGMENT_SECONDS * 5, {clip.stat().st_size})
    assert _share(labels, COFFEE) >= 0.8, labels
    # The new version is cached under its own keys like any other.
    assert third["reused"] == {"download": SEGMENTS, "transcode": SEGMENTS, "classify": SEGMENTS}, third
    assert fourth["reused"] == {"download": SEGMENTS - 1, "transcode": SEGMENTS - 1, "classify": SEGMENTS}, (
        fourth
    )
    assert fifth["reused"] == {"download": 0, "transcode": 0, "classify": SEGMENTS}, fifth
    assert _rows("rerec-01")[:2] == (segments, detections)


def test_a_model_mismatch_fails_the_run_after_one_attempt_naming_the_setting(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from blocks.model_server import TFServingModel
    from flows.pipeline import recorder_pipeline

    served = TFServingModel.load(CLASSIFIER)
    wrong = served.model_copy(update={"input_size": 192})
    wrong.save("mismatch-input-size", overwrite=True)
    start, end = demo_window()
    state = recorder_pipeline(
        "nvr-01", start, end, channels=[1], model_block="mismatch-input-size", return_state=True
    )
    assert state.is_failed()
    assert "input_size 192" in state.message, state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    (check,) = [r for r in runs if r.name.startswith("check model")]
    assert check.run_count == 1 and check.state is not None and check.state.is_failed()


def _segment_after_window() -> tuple[datetime, datetime]:
    """The segment the simulator records right after the demo window."""
    _, end = demo_window()
    return end, end + timedelta(seconds=20)


def test_an_account_without_the_download_right_fails_once_naming_the_user(stack):
    from flows.pipeline import recorder_pipeline

    port = simulated_port(stack, "nvr-02")
    register_alias(stack, "nvr-02", "nvr-02-rights")  # a download of its own, whatever ran before
    control.reset_stats(port)
    control.set_faults(port, low_privilege="download")
    try:
        start, end = _segment_after_window()
        state = recorder_pipeline("nvr-02-rights", start, end, channels=[1], return_state=True)
        stats = control.stats(port)
    finally:
        control.reset_faults(port)
    assert state.is_failed()
    assert "InsufficientPermissions" in state.message, state.message
    assert "user 'admin'" in state.message and "lowPrivilege" in state.message, state.message
    # One refused download, no retry by the task or the client (the other request is the digest challenge).
    assert stats["refusals"] == {"lowPrivilege": 1}, stats
    assert stats["requests_by_path"].get("/ISAPI/ContentMgmt/download", 0) <= 2, stats


def test_a_refused_download_form_falls_back_to_another(stack):
    from flows.pipeline import recorder_pipeline

    port = simulated_port(stack, "nvr-02")
    register_alias(stack, "nvr-02", "nvr-02-forms")  # a download of its own, whatever ran before
    control.reset_stats(port)
    control.set_faults(port, refuse_download_forms="post_xml")
    try:
        start, end = _segment_after_window()
        summary = recorder_pipeline("nvr-02-forms", start, end, channels=[2])
        stats = control.stats(port)
    finally:
        control.reset_faults(port)
    assert summary["persisted"] == summary["segments"] == 1, summary
    # POST refused once, then GET with the XML body: one download served.
    assert stats["downloads_by_form"] == {"post_xml": 1, "get_xml": 1}, stats
    assert stats["refusals"] == {"methodNotAllowed": 1} and stats["downloads_completed"] == 1, stats
