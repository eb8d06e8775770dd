"""`python -m review` as the supervisor starts it, on the stack's blocks: its store and its ClickHouse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from blocks.video_store import LocalVideoStore, load_video_store
from stack.paths import PROJECT_ROOT
from stack.ports import HOST, free_port, wait_for_port


@pytest.mark.stack
def test_the_app_starts_on_the_stacks_blocks(stack, tmp_path):
    store = load_video_store()
    assert isinstance(store, LocalVideoStore) and store.base == (stack.data_dir / "store").resolve()
    store.put_bytes(b"\xff\xd8\xff-thumbnail", "review-check/t.jpg")

    port = free_port()
    env = {**os.environ, "NVRFLOW_REVIEW_PASSWORD": "stack review password", "PYTHONPATH": str(PROJECT_ROOT)}
    log_path = tmp_path / "review.log"
    with log_path.open("wb") as log:
        app = subprocess.Popen(
            [sys.executable, "-m", "review", "--host", HOST, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_port(port, timeout=120, alive=lambda: app.poll() is None)
        with httpx.Client(
            base_url=f"http://{HOST}:{port}", timeout=30, auth=("ops", "stack review password")
        ) as c:
            assert c.get("/api/objects").status_code == 200
            assert c.get("/store/review-check/t.jpg").content == b"\xff\xd8\xff-thumbnail"
    finally:
        app.terminate()
        # uvicorn shuts down, then ends by the signal it was sent (as systemd expects of a clean stop).
        assert app.wait(timeout=30) in (0, -signal.SIGTERM), log_path.read_text()
        assert "Application shutdown complete" in log_path.read_text()
        store.delete("review-check/t.jpg")
    assert "stack review password" not in log_path.read_text()
