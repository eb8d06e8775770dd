"""The folder watcher: one announcement per complete file, and its command line."""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from watchdog.observers.polling import PollingObserver

from inbox.watch import Arrival, FolderWatcher, event_resource
from stack.paths import PROJECT_ROOT
from stack.simulator.footage import ensure_clip


@pytest.fixture(scope="module")
def clip() -> Path:
    return ensure_clip("coffee", "h264", "none", 4, width=320, height=240, fps=10)


class Recorder:
    """An `emit` for the watcher that keeps what it was given."""

    def __init__(self):
        self.arrivals: queue.Queue[Arrival] = queue.Queue()

    def __call__(self, arrival: Arrival) -> None:
        self.arrivals.put(arrival)

    def next(self, timeout: float = 15) -> Arrival:
        return self.arrivals.get(timeout=timeout)

    def drained(self) -> list[Arrival]:
        out = []
        while not self.arrivals.empty():
            out.append(self.arrivals.get_nowait())
        return out


# --- the watcher, without Prefect -------------------------------------------------------------


def test_half_written_file_is_announced_once_after_close(tmp_path, clip):
    data = clip.read_bytes()
    chunks = [data[i : i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    emit = Recorder()
    with FolderWatcher(tmp_path, emit, source="cam-a", settle_s=0.2, poll_s=0.05) as watcher:
        target = tmp_path / "slow.hik"
        with open(target, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                # Long past the settle time, with the file still open: a size check alone would fire here.
                watcher.wait_ticks(8)
                assert emit.drained() == [], "a file still open for writing was announced"
        arrival = emit.next()
        watcher.wait_ticks(8)
        assert emit.drained() == []
    assert arrival.path == target.resolve()
    assert (arrival.source, arrival.size) == ("cam-a", len(data))
    assert arrival.sha256 == hashlib.sha256(data).hexdigest()


def test_temp_and_hidden_names_are_ignored_and_a_rename_counts(tmp_path, clip):
    emit = Recorder()
    with FolderWatcher(tmp_path, emit, settle_s=0.2, poll_s=0.05) as watcher:
        for name in (".hidden.hik", "copy.hik.part", "x.tmp", "y.crdownload", "z.hik~", "empty.hik"):
            (tmp_path / name).write_bytes(b"" if name == "empty.hik" else b"not yet")
        shutil.copyfile(clip, tmp_path / "a.hik.part")
        os.replace(tmp_path / "a.hik.part", tmp_path / "a.hik")
        first = emit.next()
        watcher.wait_ticks(8)
        rest = emit.drained()
    assert first.path.name == "a.hik" and rest == []


def test_rewriting_the_same_bytes_is_not_a_new_file_but_new_content_is(tmp_path, clip):
    emit = Recorder()
    with FolderWatcher(tmp_path, emit, settle_s=0.2, poll_s=0.05) as watcher:
        shutil.copyfile(clip, tmp_path / "c.hik")
        first = emit.next()
        shutil.copyfile(clip, tmp_path / "c.hik")  # same bytes, new mtime
        watcher.wait_ticks(8)
        assert emit.drained() == []
        (tmp_path / "c.hik").write_bytes(clip.read_bytes()[:-100])
        second = emit.next()
    assert first.path == second.path and first.sha256 != second.sha256


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_files_waiting_at_start_are_announced_once(tmp_path, clip, observer):
    for name in ("one.hik", "two.hik"):
        shutil.copyfile(clip, tmp_path / name)
    emit = Recorder()
    chosen = PollingObserver(timeout=0.1) if observer == "polling" else None
    with FolderWatcher(tmp_path, emit, settle_s=0.3, poll_s=0.05, observer=chosen) as watcher:
        got = {emit.next().path.name, emit.next().path.name}
        if observer == "polling":
            # Without close events a new file is judged by a size that holds.
            shutil.copyfile(clip, tmp_path / "three.hik")
            got.add(emit.next().path.name)
        watcher.wait_ticks(10)
        assert emit.drained() == []
    assert got == ({"one.hik", "two.hik", "three.hik"} if observer == "polling" else {"one.hik", "two.hik"})


def test_event_resource_carries_what_the_trigger_templates_read(tmp_path):
    arrival = Arrival(tmp_path / "a b.hik", "cam-a", "ab" * 32, 10)
    resource = event_resource(arrival)
    assert resource["prefect.resource.id"] == "nvrflow.file." + "ab" * 32
    assert resource["nvrflow.path"] == str(tmp_path / "a b.hik")
    assert resource["nvrflow.source"] == "cam-a"
    assert all(isinstance(v, str) for v in resource.values())


def test_the_deployment_trigger_templates_path_and_source():
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    (deployment,) = [d for d in config["deployments"] if d["entrypoint"] == "flows/ingest.py:ingest_video"]
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == ["nvrflow.video.arrived"]
    assert trigger["match"] == {"prefect.resource.id": "nvrflow.file.*"}
    assert trigger["parameters"] == {
        "path": "{{ event.resource['nvrflow.path'] }}",
        "source": "{{ event.resource['nvrflow.source'] }}",
    }


def test_watcher_cli_refuses_a_missing_folder(tmp_path):
    done = subprocess.run(  # noqa: S603 - fixed argument list
        [sys.executable, "-m", "inbox.watch", "--folder", str(tmp_path / "nope")],
        cwd=PROJECT_ROOT, env=os.environ | {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "not a folder" in done.stderr, done.stderr
