"""The video store: where MP4 clips and thumbnails live, for every worker and the review app.

The store is a Prefect filesystem block, so every machine finds it by name
(`core.settings.DEFAULT_VIDEO_STORE_BLOCK`):

- `LocalFileSystem(basepath=...)`: a folder of this machine, or a share every machine mounts at the
  same path (NFS, SMB). The embedded stack's is `<data>/store`. Files are written to a temporary
  name beside their place and renamed, so a reader never sees half a clip.
- `RemoteFileSystem(basepath="s3://bucket/nvrflow", settings={...})`: any fsspec file system
  (S3 needs `s3fs` installed; `settings` are passed to it, e.g. `{"key": ..., "secret": ...}` or an
  endpoint for MinIO). An object appears whole when its upload ends.

Callers name files by keys: relative POSIX paths such as `nvr-01/2/2026-11-01/seg.mp4`.
`check_key` is the one rule for what a key may be; on a local store a key must also stay inside
the base path once symlinks are resolved. Files are copied in chunks, never read whole.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from blocks.loading import load_block
from core.settings import DEFAULT_VIDEO_STORE_BLOCK

_TMP_SUFFIX = ".part"  # files being written: never listed, never served


class InvalidKey(ValueError):
    """A key that is not a relative path inside the store."""


def check_key(key: str) -> str:
    """`key` if it is a relative POSIX path of plain parts, else InvalidKey.

    Refused: empty keys, absolute paths, `.` and `..` parts, empty parts (`a//b`, a trailing `/`),
    backslashes, NUL and other control characters, and names of files being written.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty key")
    if any(ord(c) < 32 or c == "\x7f" for c in key):
        raise InvalidKey("control character in key")
    if "\\" in key:
        raise InvalidKey("backslash in key")
    if key.startswith("/"):
        raise InvalidKey("absolute key")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey("empty, '.' or '..' part in key")
    if parts[-1].endswith(_TMP_SUFFIX):
        raise InvalidKey("key of a file being written")
    return key


@dataclass(frozen=True)
class StoreEntry:
    key: str
    size: int
    mtime: datetime


@dataclass(frozen=True)
class StoreUsage:
    files: int
    bytes: int


class VideoStore:
    """A loaded filesystem block, seen as files under keys. `VideoStore.of(block)` picks the kind."""

    @staticmethod
    def of(block: LocalFileSystem | RemoteFileSystem) -> VideoStore:
        if isinstance(block, LocalFileSystem):
            return LocalVideoStore(block)
        if isinstance(block, RemoteFileSystem):
            return RemoteVideoStore(block)
        raise TypeError(f"a video store is a LocalFileSystem or RemoteFileSystem block, not {type(block).__name__}")

    def put_file(self, local: Path, key: str) -> str:
        """Copy `local` to `key` (replacing what was there), in chunks; returns the key."""
        raise NotImplementedError

    def put_bytes(self, data: bytes, key: str) -> str:
        raise NotImplementedError

    def size(self, key: str) -> int:
        """Bytes of the file at `key`; FileNotFoundError when there is none."""
        raise NotImplementedError

    def open(self, key: str) -> IO[bytes]:
        """The file at `key`, opened for binary reading, seekable; FileNotFoundError when there is none."""
        raise NotImplementedError

    def local_path(self, key: str) -> Path | None:
        """The file's path on this machine (a local store only), checked to be inside the store."""
        return None

    def delete(self, key: str) -> None:
        """Remove the file at `key`; nothing when there is none."""
        raise NotImplementedError

    def entries(self) -> Iterator[StoreEntry]:
        """Every file of the store (not those being written): key, size, modification time."""
        raise NotImplementedError

    def usage(self) -> StoreUsage:
        files = total = 0
        for entry in self.entries():
            files += 1
            total += entry.size
        return StoreUsage(files, total)


class LocalVideoStore(VideoStore):
    """A folder: the block's base path (created when missing)."""

    def __init__(self, block: LocalFileSystem):
        if not block.basepath:
            raise ValueError("a local video store needs a basepath")
        self.base = Path(block.basepath).expanduser().resolve()
        self.base.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        """The key's path, refused (InvalidKey) if it resolves outside the base, symlinks followed."""
        path = (self.base / check_key(key)).resolve()
        if not path.is_relative_to(self.base) or path == self.base:
            raise InvalidKey("key resolves outside the store")
        return path

    def _write(self, key: str, fill: Any) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target = self._path(key)  # again: a folder made by another writer in between may be a link
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        try:
            fill(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return key

    def put_file(self, local: Path, key: str) -> str:
        return self._write(key, lambda tmp: shutil.copyfile(local, tmp))

    def put_bytes(self, data: bytes, key: str) -> str:
        return self._write(key, lambda tmp: tmp.write_bytes(data))

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def open(self, key: str) -> IO[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path.open("rb")

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def entries(self) -> Iterator[StoreEntry]:
        for folder, _dirs, names in os.walk(self.base):  # symlinked folders are not entered
            for name in names:
                path = Path(folder) / name
                if name.endswith(_TMP_SUFFIX) or path.is_symlink():
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # deleted while listed
                    continue
                key = path.relative_to(self.base).as_posix()
                yield StoreEntry(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))


class RemoteVideoStore(VideoStore):
    """An fsspec file system under the block's base path (`s3://bucket/prefix`, ...)."""

    def __init__(self, block: RemoteFileSystem):
        self.block = block
        self.fs = block.filesystem
        self.base = block.basepath.rstrip("/")

    def _url(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}"

    def put_file(self, local: Path, key: str) -> str:
        url = self._url(key)
        self.fs.makedirs(url.rsplit("/", 1)[0], exist_ok=True)
        self.fs.put_file(str(local), url)
        return key

    def put_bytes(self, data: bytes, key: str) -> str:
        url = self._url(key)
        self.fs.makedirs(url.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(url, data)
        return key

    def size(self, key: str) -> int:
        return int(self.fs.size(self._url(key)))

    def open(self, key: str) -> IO[bytes]:
        url = self._url(key)
        if not self.fs.isfile(url):
            raise FileNotFoundError(key)
        return self.fs.open(url, "rb")

    def delete(self, key: str) -> None:
        url = self._url(key)
        if self.fs.exists(url):
            self.fs.rm_file(url)

    def entries(self) -> Iterator[StoreEntry]:
        root = self.fs._strip_protocol(self.base)
        for path, info in self.fs.find(self.base, detail=True).items():
            key = path[len(root) :].lstrip("/")
            if not key or key.rsplit("/", 1)[-1].endswith(_TMP_SUFFIX):
                continue
            yield StoreEntry(key, int(info.get("size") or 0), _mtime(info))


def _mtime(info: dict[str, Any]) -> datetime:
    """fsspec's modification time, by whichever name the file system gives it."""
    for name in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
    return datetime.fromtimestamp(0, UTC)


def load_video_store(name: str = DEFAULT_VIDEO_STORE_BLOCK) -> VideoStore:
    """The saved filesystem block `name`: a LocalFileSystem of that name, else a RemoteFileSystem."""
    try:
        return VideoStore.of(load_block(LocalFileSystem, name))
    except ValueError:  # no LocalFileSystem of that name
        return VideoStore.of(load_block(RemoteFileSystem, name))


# The name the pipeline's persist stage loads the store by.
load_store = load_video_store
