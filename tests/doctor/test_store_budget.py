"""The doctor's video store check: its use against its budget, a warning from 90 %, a failure past it."""

from __future__ import annotations

from prefect.filesystems import LocalFileSystem

from blocks.video_store import VideoStore
from doctor.__main__ import report
from doctor.checks import video_store


def test_use_against_budget_ok_warned_then_failed_with_the_fix(tmp_path):
    store = VideoStore.of(LocalFileSystem(basepath=str(tmp_path)))
    for n in range(3):
        store.put_bytes(b"\0" * 1000, f"clips/nvr-01/1/2026-11-01/seg{n}.mp4")

    fine = video_store("nvrflow-video", store, budget_bytes=10_000)
    assert fine.ok and not fine.warning
    assert "3 files" in fine.detail and "(30%)" in fine.detail

    near = video_store("nvrflow-video", store, budget_bytes=3200)
    assert near.ok and near.warning and "(94%)" in near.detail and "retention" in near.fix
    assert report([near]).splitlines()[0].startswith("warn  video store")
    assert report([near]).splitlines()[-1] == "all 1 checks ok, 1 with a warning"

    over = video_store("nvrflow-video", store, budget_bytes=2000)
    assert not over.ok and "over budget" in over.detail and "(150%)" in over.detail
    assert "retention" in over.fix and "NVRFLOW_STORE_BUDGET_GB" in over.fix
    assert report([over]).splitlines()[0].startswith("FAIL  video store")
