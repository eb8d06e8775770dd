"""The video store: where MP4s and thumbnails are kept for every machine and the review app.

A Prefect filesystem block holds it (`LocalFileSystem` on a path by default); keys are the
relative paths `core.store` makes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prefect.filesystems import LocalFileSystem

from blocks.loading import load_block
from core.settings import DEFAULT_VIDEO_STORE_BLOCK


class VideoStore:
    def __init__(self, filesystem: LocalFileSystem) -> None:
        self.root = Path(filesystem.basepath or ".").resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"store key {key!r} leaves the store")
        return path

    def put_file(self, local: Path, key: str) -> str:
        target = self._path(key)
        if target.is_file() and target.stat().st_size == local.stat().st_size:
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
        return key

    def put_bytes(self, data: bytes, key: str) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return key


def load_store(name: str = DEFAULT_VIDEO_STORE_BLOCK) -> VideoStore:
    return VideoStore(load_block(LocalFileSystem, name))
