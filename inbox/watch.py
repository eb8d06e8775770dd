"""Watch a folder and announce every new, completely written video file as one Prefect event.

`python -m inbox.watch --folder DIR [--source NAME] [--settle SECONDS] [--recursive]`

Each file becomes one `nvrflow.video.arrived` event whose resource is
`nvrflow.file.<sha256 of the content>` with the labels `nvrflow.path` (absolute),
`nvrflow.source`, `nvrflow.sha256` and `nvrflow.bytes`; the `ingest-video/on-arrival`
deployment is triggered by it.

When is a file complete:
- Linux (inotify): when the writer closes it after writing (IN_CLOSE_WRITE). A writer that
  pauses for minutes with the file open is waited for.
- A file renamed into the folder, one already there when the watcher starts, or any file
  where the observer gives no close events (polling, macOS): when its size and mtime stay
  the same across two checks `--settle` seconds apart; a write seen meanwhile switches
  the file to waiting for its close.
Hidden names and temporary names (`.part`, `.tmp`, `.partial`, `.crdownload`, `~`, ...)
and empty files are never announced: write to such a name and rename when done.
A file is announced once; it is announced again only if it is replaced by other content.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid5

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from core.segment import check_source, content_sha256

EVENT_NAME = "nvrflow.video.arrived"
RESOURCE_PREFIX = "nvrflow.file."
TEMP_SUFFIXES = (".part", ".tmp", ".temp", ".partial", ".crdownload", ".download", ".filepart", ".swp")

log = logging.getLogger("nvrflow.watcher")


@dataclass(frozen=True)
class Arrival:
    path: Path
    source: str
    sha256: str
    size: int
    mtime_ns: int = 0


Emit = Callable[[Arrival], None]


def is_ignored(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    if not parts or any(p.startswith(".") for p in parts):
        return True
    name = path.name.lower()
    return name.endswith("~") or name.endswith(TEMP_SUFFIXES) or ".part." in name


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Pending:
    # "close": wait for close-after-write; "stable": wait for the same size and mtime over settle_s.
    mode: str
    seen: tuple[int, int] | None = None
    since: float = 0.0


class _Forward(FileSystemEventHandler):
    def __init__(self, inbox: queue.Queue):
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        self.inbox.put((event.event_type, event.is_directory, os.fsdecode(event.src_path), dest))


class FolderWatcher:
    """Turns file-system events on `folder` into one `emit(Arrival)` per complete file."""

    def __init__(
        self,
        folder: Path,
        emit: Emit,
        source: str = "upload",
        settle_s: float = 2.0,
        poll_s: float = 0.25,
        recursive: bool = False,
        observer: BaseObserver | None = None,
    ):
        self.folder = Path(folder).resolve()
        self.emit = emit
        self.source = check_source(source)
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.recursive = recursive
        self._observer = observer or Observer()
        # Only inotify reports close-after-write; elsewhere every file is judged by stability.
        self._closes = type(self._observer).__name__ == "InotifyObserver"
        self._inbox: queue.Queue = queue.Queue()
        self._pending: dict[Path, _Pending] = {}
        self._emitted: dict[Path, tuple[tuple[int, int, int, int], str]] = {}
        self._stop = threading.Event()
        self._ticks = 0
        self._ticked = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="folder-watcher", daemon=True)

    def start(self) -> FolderWatcher:
        if not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: not a folder")
        # Watch first, then list: a file written in between is seen by both, and emitted once.
        self._observer.schedule(_Forward(self._inbox), str(self.folder), recursive=self.recursive)
        self._observer.start()
        for path in self._existing(self.folder):
            self._inbox.put(("existing", False, str(path), ""))
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> FolderWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ticks(self, n: int = 1, timeout: float = 10.0) -> None:
        """Block until the watcher went through `n` more rounds (every event queued before is handled)."""
        with self._ticked:
            target = self._ticks + n
            if not self._ticked.wait_for(lambda: self._ticks >= target, timeout):
                raise TimeoutError(f"watcher made no progress in {timeout} s")

    def _existing(self, folder: Path) -> Iterator[Path]:
        found = folder.rglob("*") if self.recursive else folder.iterdir()
        for path in sorted(found):
            if path.is_file() and not is_ignored(path, self.folder):
                yield path

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = time.monotonic() + self.poll_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    self._handle(*self._inbox.get(timeout=left))
                except queue.Empty:
                    break
            while True:  # everything queued up to now, so that a tick means "caught up"
                try:
                    self._handle(*self._inbox.get_nowait())
                except queue.Empty:
                    break
            self._check_pending()
            if self._ticks % 1000 == 999:
                # Files taken away without an event we could pair (moved to another file system).
                self._emitted = {p: seen for p, seen in self._emitted.items() if p.exists()}
            with self._ticked:
                self._ticks += 1
                self._ticked.notify_all()

    def _handle(self, kind: str, is_dir: bool, src: str, dest: str) -> None:
        path = Path(src)
        if is_dir:
            if kind in ("created", "moved") and self.recursive:
                target = Path(dest) if kind == "moved" else path
                if not is_ignored(target, self.folder) or target == self.folder:
                    for inner in self._existing(target):
                        self._watch(inner, "stable")
            return
        if kind == "deleted":
            self._forget(path)
        elif kind == "moved":
            self._forget(path)
            self._watch(Path(dest), "stable")
        elif kind in ("created", "modified"):
            self._watch(path, "close" if self._closes else "stable", written=True)
        elif kind == "closed":
            if not is_ignored(path, self.folder):
                self._announce(path)
        elif kind == "existing":
            self._watch(path, "stable")

    def _watch(self, path: Path, mode: str, written: bool = False) -> None:
        if is_ignored(path, self.folder):
            return
        current = self._pending.get(path)
        if current is None or written:
            # A write seen later overrides stability: the close decides.
            self._pending[path] = _Pending(mode, since=time.monotonic())

    def _forget(self, path: Path) -> None:
        self._pending.pop(path, None)
        self._emitted.pop(path, None)

    def _check_pending(self) -> None:
        now = time.monotonic()
        for path, pending in list(self._pending.items()):
            if pending.mode != "stable":
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                self._pending.pop(path, None)
                continue
            seen = (st.st_size, st.st_mtime_ns)
            if seen != pending.seen:
                pending.seen, pending.since = seen, now
            elif now - pending.since >= self.settle_s:
                self._announce(path)

    def _announce(self, path: Path) -> None:
        self._pending.pop(path, None)
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        before = self._emitted.get(path)
        if st.st_size == 0 or (before and before[0] == _identity(st)):
            return
        try:
            sha = content_sha256(path)
            after = path.stat()
        except FileNotFoundError:
            return
        if _identity(after) != _identity(st):
            # Changed while being hashed: not complete after all; judge it again.
            self._pending[path] = _Pending("close" if self._closes else "stable", since=time.monotonic())
            return
        if before and before[1] == sha:
            # Touched or rewritten with the same bytes: the same file, already announced.
            self._emitted[path] = (_identity(st), sha)
            return
        try:
            self.emit(Arrival(path, self.source, sha, st.st_size, st.st_mtime_ns))
        except Exception as exc:
            log.warning(f"{path}: not announced ({type(exc).__name__}: {exc}); trying again")
            self._pending[path] = _Pending("stable", since=time.monotonic())
            return
        self._emitted[path] = (_identity(st), sha)
        log.info(f"arrived: {path} ({st.st_size} bytes, sha256 {sha[:16]})")


def event_resource(arrival: Arrival) -> dict[str, str]:
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{arrival.sha256}",
        "prefect.resource.name": arrival.path.name,
        "nvrflow.path": str(arrival.path),
        "nvrflow.source": arrival.source,
        "nvrflow.sha256": arrival.sha256,
        "nvrflow.bytes": str(arrival.size),
    }


def event_id(arrival: Arrival) -> UUID:
    """The same arrival always gets the same id, so a resend after a failure is one event, not two."""
    return uuid5(NAMESPACE_URL, f"nvrflow:{arrival.path}:{arrival.sha256}:{arrival.mtime_ns}")


async def _send(arrival: Arrival) -> None:
    from prefect.events import Event, Resource
    from prefect.events.clients import get_events_client

    event = Event(event=EVENT_NAME, resource=Resource(event_resource(arrival)), id=event_id(arrival))
    async with get_events_client(reconnection_attempts=2) as client:
        await client.emit(event)


def emit_to_prefect(arrival: Arrival) -> None:
    """Send one event and return only once the server took it; raises if it cannot be reached.

    A connection per event (files arrive seconds apart at most) means a failure reaches the
    watcher, which keeps the file pending and tries again, instead of a background queue
    dropping the event.
    """
    asyncio.run(asyncio.wait_for(_send(arrival), timeout=60))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inbox.watch", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, type=Path, help="folder to watch")
    parser.add_argument(
        "--source", default="upload", help="source name stored as `recorder` (default: upload)"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds a size must hold when judged by size"
    )
    parser.add_argument("--recursive", action="store_true", help="watch sub-folders too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # Prefect configures the root logger on import; the watcher's own lines go to stdout regardless.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("PREFECT_API_URL is not set: events would go nowhere", file=sys.stderr)
        return 2
    try:
        watcher = FolderWatcher(
            args.folder, emit_to_prefect, args.source, args.settle, recursive=args.recursive
        )
        watcher.start()
    except (ValueError, OSError) as exc:
        print(f"cannot watch {args.folder}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info(f"watching {watcher.folder} (source {watcher.source})")
    while not stop.wait(1.0):
        pass
    watcher.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
