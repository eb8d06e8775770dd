"""Frame sampling: one ffmpeg pipe per video, frames resized for the model, streamed.

Memory holds one batch of frames at a time, whatever the length of the video.
"""

from __future__ import annotations

import math
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np

from flows.media import input_options


class FrameSamplingError(RuntimeError):
    pass


def sample_frames(
    video: Path, size: int, fps: float = 1.0, batch: int = 8, timeout_s: float = 600.0, start: datetime | None = None
) -> Iterator[tuple[list[float], np.ndarray]]:
    """Yield (offsets in seconds, uint8 frames [n, size, size, 3]) batches.

    With `start`, the first frame is taken on the first whole second of the real start
    time, so that frame times line up across segments and recorders.
    """
    skip = 0.0
    if start is not None:
        skip = math.ceil(start.timestamp()) - start.timestamp()
    vf = f"fps={fps},scale={size}:{size}:flags=area"
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *input_options(video),
            "-i", str(video), "-ss", f"{skip:.3f}", "-an", "-vf", vf,
            "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]  # fmt: skip
    frame_bytes = size * size * 3
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    # A stuck decoder is killed; the read loop then ends and the timeout is reported.
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    index = 0
    try:
        while True:
            buf = proc.stdout.read(frame_bytes * batch)
            count = len(buf) // frame_bytes
            if count:
                frames = np.frombuffer(buf[: count * frame_bytes], dtype=np.uint8).reshape(count, size, size, 3)
                yield [skip + (index + i) / fps for i in range(count)], frames
                index += count
            if len(buf) < frame_bytes * batch:
                break
        rc = proc.wait(timeout=30)
        if not watchdog.is_alive():
            raise FrameSamplingError(f"{video.name}: frame sampling took longer than {timeout_s:.0f} s")
        if rc != 0:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            raise FrameSamplingError(f"{video.name}: ffmpeg exited with {rc}: {' | '.join(err)}")
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
