"""The video store: keys, streamed and atomic writes, listing, and refusal of anything outside it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from blocks.video_store import InvalidKey, LocalVideoStore, RemoteVideoStore, VideoStore, check_key


@pytest.mark.parametrize(
    "key", ["a.mp4", "nvr-01/2/2026-11-01/seg 1.mp4", "x/y/z.jpg", "..a/b..c/...d.mp4", "ünïcode/ok.jpg"]
)
def test_relative_plain_keys_are_taken(key):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x.mp4", "a/../../x.mp4", "a/..", "./a.mp4", "a/./b.mp4", "a//b.mp4", "a/",
     "a\\..\\b.mp4", "a\\b.mp4", "a\x00.mp4", "a/b\n.mp4", "s3://bucket/x.mp4", "a/.b.mp4.1234.part"],
)  # fmt: skip
def test_keys_that_could_leave_the_store_are_refused(key):
    with pytest.raises(InvalidKey):
        check_key(key)


@pytest.fixture
def store(tmp_path) -> LocalVideoStore:
    made = VideoStore.of(LocalFileSystem(basepath=str(tmp_path / "store")))
    assert isinstance(made, LocalVideoStore)
    return made


def test_local_store_round_trip(store: LocalVideoStore, tmp_path: Path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    assert store.put_file(source, "nvr-01/1/clip.mp4") == "nvr-01/1/clip.mp4"
    store.put_bytes(b"\xff\xd8\xffjpeg", "nvr-01/1/t.jpg")
    assert store.size("nvr-01/1/clip.mp4") == source.stat().st_size
    with store.open("nvr-01/1/clip.mp4") as file:
        file.seek(1000)
        assert file.read(10) == source.read_bytes()[1000:1010]
    assert store.local_path("nvr-01/1/t.jpg") == store.base / "nvr-01/1/t.jpg"
    entries = {e.key: e.size for e in store.entries()}
    assert entries == {"nvr-01/1/clip.mp4": source.stat().st_size, "nvr-01/1/t.jpg": 7}
    assert store.usage().files == 2 and store.usage().bytes == source.stat().st_size + 7
    store.delete("nvr-01/1/t.jpg")
    store.delete("nvr-01/1/t.jpg")  # nothing there: nothing to do
    with pytest.raises(FileNotFoundError):
        store.open("nvr-01/1/t.jpg")
    assert not list(store.base.rglob("*.part"))


def test_a_reader_sees_the_old_file_or_the_new_one_never_half(store: LocalVideoStore, tmp_path: Path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(b"o" * 2_000_000)
    new.write_bytes(b"n" * 4_000_000)
    store.put_file(old, "c.mp4")
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            with store.open("c.mp4") as file:
                data = file.read()
            seen.add(data[:1] + str(len(data)).encode())

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(10):
        store.put_file(new, "c.mp4")
        store.put_file(old, "c.mp4")
    stop.set()
    reader.join()
    assert seen <= {b"o2000000", b"n4000000"}


def test_symlinks_out_of_the_store_are_refused(store: LocalVideoStore, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    (store.base / "file-link.mp4").symlink_to(outside / "secret.mp4")
    (store.base / "dir-link").symlink_to(outside, target_is_directory=True)
    for key in ("file-link.mp4", "dir-link/secret.mp4", "dir-link/new.mp4"):
        with pytest.raises(InvalidKey):
            store.open(key)
        with pytest.raises(InvalidKey):
            store.put_bytes(b"x", key)
        with pytest.raises(InvalidKey):
            store.delete(key)
    assert (outside / "secret.mp4").read_bytes() == b"secret"
    assert [e.key for e in store.entries()] == []  # links are not listed
    # A link that stays inside is a file of the store.
    store.put_bytes(b"inside", "a/real.jpg")
    (store.base / "a" / "alias.jpg").symlink_to(store.base / "a" / "real.jpg")
    assert store.open("a/alias.jpg").read() == b"inside"


def test_remote_store_through_fsspec(tmp_path: Path):
    block = RemoteFileSystem(basepath="memory://nvrflow-test/videos")
    store = VideoStore.of(block)
    assert isinstance(store, RemoteVideoStore)
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"m" * 300_000)
    store.put_file(source, "nvr-02/3/clip.mp4")
    store.put_bytes(b"jpeg", "nvr-02/3/t.jpg")
    assert store.size("nvr-02/3/clip.mp4") == 300_000
    with store.open("nvr-02/3/clip.mp4") as file:
        file.seek(299_990)
        assert file.read() == b"m" * 10
    assert store.local_path("nvr-02/3/t.jpg") is None
    assert sorted(e.key for e in store.entries()) == ["nvr-02/3/clip.mp4", "nvr-02/3/t.jpg"]
    assert store.usage().bytes == 300_004
    store.delete("nvr-02/3/t.jpg")
    with pytest.raises(FileNotFoundError):
        store.open("nvr-02/3/t.jpg")
    with pytest.raises(InvalidKey):
        store.open("../other/x.mp4")
