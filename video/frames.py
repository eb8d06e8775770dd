"""Frame sampling: one ffmpeg pipe per video, frames resized for the model, streamed.

Memory holds a few batches of frames at a time (the one in use and the ones decoded ahead),
whatever the length of the video.

The frame taken for an instant is the one on screen at that instant: the last frame that
starts at or before it.
"""

from __future__ import annotations

import math
import queue
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import numpy as np

from core.errors import ServiceError
from video.probe import input_options

PREFETCH_BATCHES = 2
PUT_POLL_S = 0.5


class FrameSamplingError(ServiceError):
    """ffmpeg could not give the frames: a decoding error stays (corrupt input), a stuck decoder may not."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self):  # Prefect pickles a failed task's exception
        return (type(self), (str(self), self.retryable))


def _read_batches(
    stdout: IO[bytes], batch_bytes: int, ready: queue.Queue[bytes | BaseException], stop: threading.Event
) -> None:
    """Read whole batches from ffmpeg until EOF (a short last read), or until the consumer stops."""

    def put(item: bytes | BaseException) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        while True:
            buf = stdout.read(batch_bytes)
            if not put(buf) or len(buf) < batch_bytes:
                return
    except (OSError, ValueError) as exc:  # the pipe closed under us: the consumer has gone or will say
        put(exc)


def sample_frames(
    video: Path,
    size: int,
    fps: float = 1.0,
    batch: int = 8,
    timeout_s: float = 600.0,
    start: datetime | None = None,
) -> Iterator[tuple[list[float], np.ndarray]]:
    """Yield (offsets in seconds, uint8 frames [n, size, size, 3]) batches.

    With `start`, the first frame is taken on the first whole second of the real start
    time, so that frame times line up across segments and recorders.
    """
    skip = 0.0
    if start is not None:
        skip = math.ceil(start.timestamp()) - start.timestamp()
    # The last frame starting at or before each instant (round=up), instants from `skip` on.
    vf = f"fps=fps={fps}:start_time={skip:.3f}:round=up,scale={size}:{size}:flags=area"
    # Frames are shrunk several times over, which hides block edges: skipping the decoder's
    # deblocking filter saves about a fifth of the decoding work for no visible change.
    # One decoding thread: the model server needs the other core, and frame threading
    # costs about a third more CPU per frame.
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-skip_loop_filter", "all",
            "-threads", "1", *input_options(video), "-i", str(video), "-an", "-vf", vf,
            "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]  # fmt: skip
    frame_bytes = size * size * 3
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are pipes
    # A stuck decoder is killed; the read loop then ends and the timeout is reported.
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    # ffmpeg stalls as soon as the pipe (64 KiB, under one frame) is full. A reader thread
    # keeps up to PREFETCH_BATCHES decoded batches ready, so the next batch is decoded while
    # the caller's current one is on the model server instead of after it comes back.
    ready: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_batches, args=(stdout, frame_bytes * batch, ready, stop), name="frames", daemon=True
    )
    reader.start()
    index = 0
    try:
        while True:
            buf = ready.get(timeout=timeout_s + 30)  # the watchdog ends the reader well before this
            if isinstance(buf, BaseException):
                raise FrameSamplingError(
                    f"{video.name}: reading frames failed: {buf}", retryable=True
                ) from buf
            count = len(buf) // frame_bytes
            if count:
                frames = np.frombuffer(buf[: count * frame_bytes], dtype=np.uint8).reshape(
                    count, size, size, 3
                )
                yield [skip + (index + i) / fps for i in range(count)], frames
                index += count
            if len(buf) < frame_bytes * batch:
                break
        rc = proc.wait(timeout=30)
        if not watchdog.is_alive():
            raise FrameSamplingError(
                f"{video.name}: frame sampling took longer than {timeout_s:.0f} s", retryable=True
            )
        if rc != 0:
            err = stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            raise FrameSamplingError(f"{video.name}: ffmpeg exited with {rc}: {' | '.join(err)}")
    finally:
        stop.set()
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=30)
        stdout.close()
        stderr.close()
