"""Frame sampling: frames decoded in this process (PyAV, FFmpeg's own libraries), resized for the
model and streamed in batches (a classifier: `sample_frames`), or whole, one at a time, as
decoded (a detector, which tests motion on the luma and cuts its own regions from the full
frame: `sample_images`).

Two ways to choose frames:
- **every 1/fps seconds** (default, 1 fps): the frame taken for an instant is the one on screen
  at that instant, the last frame that starts at or before it. A group of pictures (a key frame
  and the frames that depend on it) is decoded only up to its last frame taken: the rest of the
  group, up to the next key frame, is never decoded. At 1 fps on the 2 s I-frame interval of
  Hikvision's defaults that is half the decoding of the whole video.
- **key frames only** (`key_frames=True`), for screening long archives: only key frames are
  decoded, each one taken at its own timestamp. How often that is follows the recorder's
  "I Frame Interval" (set per channel and stream on Hikvision devices, in frames: 50 at 25 fps
  is one frame every 2 s); an interval longer than the scenes an operator looks for misses
  them, a shorter one costs the recorder bit rate.

Memory holds a few batches of frames (the one in use and the ones decoded ahead), or a few whole
frames, and one group of pictures' compressed packets, whatever the length of the video.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from core.errors import ServiceError
from video.probe import input_options

PREFETCH_BATCHES = 1  # decoded ahead of the one in use; two more are in flight (classify_batches)
PREFETCH_IMAGES = 4  # whole frames decoded ahead of the one in use (1280x720 YUV is 1.4 MB)
DETECT_DECODE_THREADS = 2
PUT_POLL_S = 0.5

Batch = tuple[list[float], np.ndarray]
X = TypeVar("X")
P = TypeVar("P")  # a decoded frame as the caller wants it


class FrameSamplingError(ServiceError):
    """The frames could not be had: a decoding error stays (corrupt input), a stuck decoder may not."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self):  # Prefect pickles a failed task's exception
        return (type(self), (str(self), self.retryable))


def sample_frames(
    video: Path,
    size: int,
    fps: float = 1.0,
    batch: int = 8,
    timeout_s: float = 600.0,
    start: datetime | None = None,
    key_frames: bool = False,
) -> Generator[Batch, None, None]:
    """Yield (offsets in seconds from the video's start, uint8 frames [n, size, size, 3]) batches.

    With `start`, the first instant is the first whole second of the real start time, so that
    frame times line up across segments and recorders (not with `key_frames`: those are where
    the recorder put them).
    """
    skip = _skip(start)
    deadline = time.monotonic() + timeout_s

    def batches() -> Generator[Batch, None, None]:
        times: list[float] = []
        images = np.empty((batch, size, size, 3), dtype=np.uint8)  # filled in place: no stacking copy
        chosen = _chosen(video, lambda frame: _picture(frame, size), fps, skip, deadline, key_frames)
        try:
            for offset, image in chosen:
                images[len(times)] = image
                times.append(offset)
                if len(times) == batch:
                    yield times, images
                    times, images = [], np.empty_like(images)
            if times:
                yield times, images[: len(times)]
        finally:
            chosen.close()  # the container, also when the consumer stopped early

    yield from _ahead(batches, PREFETCH_BATCHES, deadline)


class FullFrame:
    """A sampled frame at full size, as decoded: its luma plane read in place (all a motion test
    needs), its RGB made only when asked for (most sampled frames show nothing moving)."""

    def __init__(self, frame: av.VideoFrame) -> None:
        self._frame = frame
        self._rgb: np.ndarray | None = None
        self.width, self.height = frame.width, frame.height

    @property
    def limited_range(self) -> bool:
        """True when the luma is video range (16..235), as H.264 cameras send it."""
        return self._frame.color_range != 2 and not self._frame.format.name.startswith("yuvj")

    def grey(self) -> np.ndarray:
        """uint8 [H, W]: the luma plane where the pixel format has one (no copy), else converted."""
        frame = self._frame
        if frame.format.name not in _PLANAR_YUV:
            return frame.to_ndarray(format="gray")
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8)[: frame.height * plane.line_size]
        return rows.reshape(frame.height, plane.line_size)[:, : frame.width]

    def rgb(self) -> np.ndarray:
        """uint8 [H, W, 3] RGB, made once."""
        if self._rgb is None:
            self._rgb = self._frame.reformat(format="rgb24").to_ndarray()
        return self._rgb


_PLANAR_YUV = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12"})


def sample_images(
    video: Path,
    max_width: int | None = None,
    fps: float = 1.0,
    timeout_s: float = 600.0,
    start: datetime | None = None,
    key_frames: bool = False,
) -> Generator[tuple[float, FullFrame], None, None]:
    """Yield (offset in seconds from the video's start, frame) for each frame chosen as
    `sample_frames` chooses them, at full size, or scaled down to `max_width` keeping the aspect
    ratio. Frames are decoded ahead in a thread, a few at most; the decoder runs two threads of
    its own (frame threading: the same CPU time, done in half the wall time when a core is free,
    as it is whenever the detector has nothing to look at).
    """
    deadline = time.monotonic() + timeout_s

    def picture(frame: av.VideoFrame) -> FullFrame:
        if max_width is None or frame.width <= max_width:
            return FullFrame(frame)
        height = max(2, round(frame.height * max_width / frame.width / 2) * 2)
        return FullFrame(
            frame.reformat(width=max_width, height=height, format="yuv420p", interpolation="AREA")
        )

    def images() -> Generator[tuple[float, FullFrame], None, None]:
        chosen = _chosen(video, picture, fps, _skip(start), deadline, key_frames, DETECT_DECODE_THREADS)
        try:
            yield from chosen
        finally:
            chosen.close()

    yield from _ahead(images, PREFETCH_IMAGES, deadline)


def _skip(start: datetime | None) -> float:
    """Seconds from the video's start to the first whole second of real time (0 without a start)."""
    if start is None:
        return 0.0
    return math.ceil(start.timestamp()) - start.timestamp()


def _chosen(
    video: Path,
    picture: Callable[[av.VideoFrame], P],
    fps: float,
    skip: float,
    deadline: float,
    key_frames: bool,
    threads: int = 1,
) -> Generator[tuple[float, P], None, None]:
    return (
        _key_frames(video, picture, deadline, threads)
        if key_frames
        else _on_screen(video, picture, fps, skip, deadline, threads)
    )


def _ahead(
    produce: Callable[[], Generator[X, None, None]], prefetch: int, deadline: float
) -> Generator[X, None, None]:
    """The items of `produce()`, made in a thread up to `prefetch` ahead of the one in use.

    Decoding runs ahead in a thread (FFmpeg's decoder releases the GIL), so the next frames are
    decoded while the caller's current ones are on the model server instead of after them.
    """
    ready: queue.Queue[X | BaseException | None] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item: X | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        items = produce()
        try:
            for item in items:
                if not put(item):
                    return
            put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)
        finally:
            items.close()

    decoder = threading.Thread(target=run, name="frames", daemon=True)
    decoder.start()
    try:
        while True:
            item = ready.get(timeout=max(deadline - time.monotonic(), 0) + 30)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        decoder.join(timeout=30)


def _open(
    video: Path, deadline: float, threads: int = 1
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    try:
        container = av.open(str(video), format="mpeg" if input_options(video) else None)
    except (av.error.FFmpegError, OSError) as exc:
        raise FrameSamplingError(f"{video.name}: cannot read the video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise FrameSamplingError(f"{video.name}: no video stream")
    stream = container.streams.video[0]
    # One decoding thread unless asked (the classifier's frames: its flows run side by side, and
    # the model server needs the other core). Frames are shrunk several times over, which hides block
    # edges: skipping the deblocking filter saves about a fifth of the decoding for no visible change.
    stream.codec_context.thread_count = threads
    if threads > 1:
        stream.codec_context.thread_type = "FRAME"
    stream.codec_context.options = {"skip_loop_filter": "all"}
    _check_time(video, deadline)
    return container, stream


def _check_time(video: Path, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise FrameSamplingError(f"{video.name}: frame sampling took longer than allowed", retryable=True)


def _picture(frame: av.VideoFrame, size: int) -> np.ndarray:
    """The classifier's square."""
    return frame.reformat(width=size, height=size, format="rgb24", interpolation="AREA").to_ndarray()


def _groups(
    video: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream, deadline: float
) -> Iterator[tuple[list[av.Packet], float | None]]:
    """Each group of pictures' packets (decode order) and the time its successor starts (None: last)."""
    group: list[av.Packet] = []
    try:
        for packet in container.demux(stream):
            _check_time(video, deadline)
            if packet.pts is None or packet.size == 0:
                continue
            if packet.is_keyframe and group:
                yield group, _seconds(packet.pts, stream)
                group = []
            group.append(packet)
    except av.error.FFmpegError as exc:
        raise FrameSamplingError(f"{video.name}: reading the video failed: {exc}") from None
    if group:
        yield group, None


def _seconds(pts: int, stream: av.video.stream.VideoStream) -> float:
    return float((pts - (stream.start_time or 0)) * (stream.time_base or Fraction(1, 90000)))


def _decode(
    video: Path, stream: av.video.stream.VideoStream, packet: av.Packet | None
) -> list[av.VideoFrame]:
    try:
        return list(stream.codec_context.decode(packet))
    except av.error.FFmpegError as exc:
        raise FrameSamplingError(f"{video.name}: decoding failed: {exc}") from None


def _on_screen(
    video: Path,
    picture: Callable[[av.VideoFrame], P],
    fps: float,
    skip: float,
    deadline: float,
    threads: int = 1,
) -> Generator[tuple[float, P], None, None]:
    """The frame on screen at skip, skip + 1/fps, ...: each group decoded up to its last one taken."""
    container, stream = _open(video, deadline, threads)
    step = 1.0 / fps
    index = 0  # next instant: skip + index * step
    wanted: dict[float, list[float]] = {}  # frame time -> the instants it is taken for
    with container:
        for packets, next_start in _groups(video, container, stream, deadline):
            starts = sorted(_seconds(p.pts, stream) for p in packets if p.pts is not None)
            ends = next_start if next_start is not None else starts[-1] + _duration(packets, stream)
            while (instant := skip + index * step) < ends:
                earlier = [t for t in starts if t <= instant + 1e-6]
                if earlier:
                    wanted.setdefault(earlier[-1], []).append(instant)
                index += 1
            for packet in packets:
                if not wanted:
                    break  # the rest of this group shows no instant: never decoded
                _check_time(video, deadline)
                yield from _taken(_decode(video, stream, packet), stream, picture, wanted)
        yield from _taken(_decode(video, stream, None), stream, picture, wanted)


def _taken(
    frames: list[av.VideoFrame],
    stream: av.video.stream.VideoStream,
    picture: Callable[[av.VideoFrame], P],
    wanted: dict[float, list[float]],
) -> Iterator[tuple[float, P]]:
    for frame in frames:
        if frame.pts is None:
            continue
        instants = wanted.pop(_seconds(frame.pts, stream), None)
        if instants:
            image = picture(frame)
            for instant in instants:
                yield instant, image


def _duration(packets: list[av.Packet], stream: av.video.stream.VideoStream) -> float:
    last = packets[-1]
    if last.duration:
        return float(last.duration * (stream.time_base or Fraction(1, 90000)))
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 0.04


def _key_frames(
    video: Path, picture: Callable[[av.VideoFrame], P], deadline: float, threads: int = 1
) -> Generator[tuple[float, P], None, None]:
    """Each key frame at its own time; no other frame is decoded."""
    container, stream = _open(video, deadline, threads)
    stream.codec_context.skip_frame = "NONKEY"
    with container:
        for packets, _next in _groups(video, container, stream, deadline):
            for frame in _decode(video, stream, packets[0]):
                if frame.pts is not None:
                    yield _seconds(frame.pts, stream), picture(frame)
        for frame in _decode(video, stream, None):
            if frame.pts is not None:
                yield _seconds(frame.pts, stream), picture(frame)
