"""Writing a streamed segment to disk so that only complete, verified files get their final name.

The body goes to `<final>.part` chunk by chunk (memory stays flat whatever the segment
size), is fsynced, checked for size and magic number, then renamed over the final name.
Any failure removes the `.part`. An exclusive lock on the `.part` keeps two workers that
were handed the same segment from interleaving their writes.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Chunk size asked of httpx's `iter_bytes`: None hands on each network read as it arrives
# (at most 64 KiB from httpcore). Re-chunking to 1 MiB costs httpx a copy of every byte and a
# fresh large buffer per chunk, which halved throughput on a 1 GB segment (bench/export.py).
CHUNK_SIZE: int | None = None
# Hikvision's 40-byte media header, or a bare MPEG-PS pack header.
MAGICS = (b"IMKH", b"\x00\x00\x01\xba")


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    bytes: int
    reused: bool


class DownloadFault(Exception):
    """Base for local verification faults; the client maps them to recorder errors."""


class WrongSize(DownloadFault):
    pass


class BadMagic(DownloadFault):
    def __init__(self, head: bytes) -> None:
        self.head = head
        super().__init__(f"starts with {head[:8].hex()} instead of IMKH or an MPEG-PS pack header")


class DownloadBusy(DownloadFault):
    pass


def has_media_magic(head: bytes) -> bool:
    return head[:4] in MAGICS


def is_complete(path: Path, expected_size: int) -> bool:
    """A final file that a previous run finished: right size (when known) and media magic."""
    try:
        size = path.stat().st_size
        if size == 0 or (expected_size and size != expected_size):
            return False
        with path.open("rb") as existing:
            return has_media_magic(existing.read(4))
    except OSError:
        return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_part(part: Path) -> int:
    """Open and exclusively lock the `.part` file; DownloadBusy if another writer holds it."""
    for _ in range(3):
        fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DownloadBusy(f"{part.name} is being written by another process") from None
        try:
            still_ours = os.stat(part).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still_ours = False
        if still_ours:
            return fd
        # The previous holder renamed or removed the file between our open and our lock.
        os.close(fd)
    raise DownloadBusy(f"{part.name} keeps changing under us")


def write_verified(
    chunks: Iterable[bytes], final: Path, expected_size: int, ceiling: int = 0
) -> DownloadResult:
    """Stream `chunks` into `final` via `final.part`; raise a DownloadFault or the iterator's error.

    `expected_size` 0 means the device did not announce one; then only the magic is checked, and
    a body longer than `ceiling` (when set) is cut off.
    """
    limit = expected_size or ceiling
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    fd = _lock_part(part)
    try:
        # A concurrent writer may have finished the segment while we waited for the lock.
        if is_complete(final, expected_size):
            part.unlink(missing_ok=True)
            return DownloadResult(final, final.stat().st_size, reused=True)
        os.ftruncate(fd, 0)
        written = 0
        head = b""
        with open(fd, "wb", closefd=False) as out:
            for chunk in chunks:
                if not chunk:
                    continue
                if len(head) < 4:
                    head += chunk[: 4 - len(head)]
                    if len(head) >= 4 and not has_media_magic(head):
                        raise BadMagic(head + chunk[:60])
                written += len(chunk)
                if limit and written > limit:
                    said = "the announced" if expected_size else "the ceiling of"
                    raise WrongSize(f"received more than {said} {limit} bytes")
                out.write(chunk)
            out.flush()
            os.fsync(fd)
        if not written:
            raise WrongSize("empty body")
        if expected_size and written != expected_size:
            raise WrongSize(f"received {written} of {expected_size} bytes")
        if not has_media_magic(head):
            raise BadMagic(head)
        os.replace(part, final)
        _fsync_dir(final.parent)
        return DownloadResult(final, written, reused=False)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
