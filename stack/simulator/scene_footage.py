"""Footage of scripted scenes: frames composited in numpy, encoded by ffmpeg, muxed by psmux.

Each frame is the still background with every actor on stage alpha-composited at its scripted
place (nearest, i.e. lowest, on top); only the actors' rectangles are touched, on a copy of a
background buffer made once. The raw frames go to ffmpeg on its standard input; its `noise`
filter adds the sensor noise (a seeded, per-segment, temporal grain: the same frames every
time, at a fraction of numpy's cost per pixel), then it encodes as `footage` does and `psmux`
wraps the result in Hikvision's download form. Clips are cached under `cache_dir()/footage/`
keyed by the script's digest, the slice of its timeline, size, rate, codec and audio.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stack.paths import cache_dir
from stack.simulator.cutouts import background_pixels, cutout_pixels
from stack.simulator.footage import audio_kind, encoder_args, write_clip
from stack.simulator.scenes import Actor, Script, place

FORMAT_VERSION = 1  # bump when the way scene clips are made changes, so stale caches are not served
NOISE_STRENGTH = 3  # ffmpeg noise filter strength on luma: about +-3 grey levels of grain
# ffmpeg gets this long for a clip, plus this much per frame (2 cores shared with others).
ENCODE_TIMEOUT_S = 120
ENCODE_TIMEOUT_PER_FRAME_S = 0.1


@functools.lru_cache(maxsize=64)
def _scaled(cutout: str, height: int, width: int, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """The cut-out at a size: premultiplied RGB and alpha (float32), resized together."""
    from skimage.transform import resize

    rgb, alpha = cutout_pixels(cutout)
    if mirrored:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    shrinking = height < alpha.shape[0]
    rgb = resize(rgb, (height, width), order=1, anti_aliasing=shrinking, preserve_range=True).astype(
        np.float32
    )
    alpha = resize(alpha, (height, width), order=1, anti_aliasing=shrinking).astype(np.float32)
    return rgb, alpha[..., None]


class Renderer:
    """Frames of a script at a size; `frame(t)` returns a buffer that the next call reuses."""

    def __init__(self, script: Script, width: int, height: int) -> None:
        self.script = script
        self.width, self.height = width, height
        self.sx, self.sy = width / script.width, height / script.height
        self.background = background_pixels(script.background, width, height)
        self.buffer = self.background.copy()
        self._dirty: list[tuple[slice, slice]] = []

    def on_stage(self, t: float) -> list[Actor]:
        t %= self.script.seconds
        actors = [a for a in self.script.actors if a.start <= t <= a.end]
        return sorted(actors, key=lambda a: (a.at(t) or a.path[0]).y)  # farther (higher) first

    def frame(self, t: float) -> np.ndarray:
        for rows, cols in self._dirty:  # undo the last frame's actors only
            self.buffer[rows, cols] = self.background[rows, cols]
        self._dirty.clear()
        t %= self.script.seconds
        for actor in self.on_stage(t):
            p = place(actor, t, self.sx, self.sy)
            if p is None:
                continue
            x0, y0 = max(p.left, 0), max(p.top, 0)
            x1, y1 = min(p.left + p.width, self.width), min(p.top + p.height, self.height)
            if x1 <= x0 or y1 <= y0:
                continue
            rgb, alpha = _scaled(actor.cutout, p.height, p.width, actor.mirrored)
            inner = np.s_[y0 - p.top : y1 - p.top, x0 - p.left : x1 - p.left]
            rows, cols = slice(y0, y1), slice(x0, x1)
            under = self.buffer[rows, cols].astype(np.float32)
            a = alpha[inner]
            self.buffer[rows, cols] = (under - under * a + rgb[inner] + 0.5).astype(np.uint8)
            self._dirty.append((rows, cols))
        return self.buffer


def frames(
    script: Script, offset_s: float, seconds: float, width: int, height: int, fps: int
) -> Iterator[np.ndarray]:
    """The frames of `seconds` of the script from `offset_s`, at `fps` (each yielded buffer is
    reused by the next one: copy it to keep it)."""
    renderer = Renderer(script, width, height)
    for k in range(round(seconds * fps)):
        yield renderer.frame(offset_s + k / fps)


def encode(
    script: Script,
    offset_s: float,
    seconds: int,
    width: int,
    height: int,
    fps: int,
    codec: str,
    out: Path,
    gop_s: int = 2,
) -> None:
    """Encode the slice into an elementary stream at `out` (Annex B with access unit delimiters)."""
    count = seconds * fps
    seed = int(hashlib.sha256(f"{script.digest}|{offset_s}".encode()).hexdigest()[:7], 16)
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0"]
    args += ["-vf", f"format=yuv420p,noise=c0s={NOISE_STRENGTH}:c0f=t:all_seed={seed}", "-r", str(fps)]
    args += [*encoder_args(codec, fps * gop_s), str(out)]
    with tempfile.TemporaryFile() as errors:
        # Argument list of validated names and numbers, no shell; killed at its deadline.
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)  # noqa: S603
        deadline = threading.Timer(ENCODE_TIMEOUT_S + count * ENCODE_TIMEOUT_PER_FRAME_S, process.kill)
        deadline.start()
        try:
            assert process.stdin is not None
            try:
                for frame in frames(script, offset_s, seconds, width, height, fps):
                    process.stdin.write(frame.data)
            finally:
                process.stdin.close()
            returncode = process.wait()
        finally:
            deadline.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        if returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"ffmpeg failed ({returncode}): {errors.read().decode()[-2000:]}")


def scene_clip_key(
    script: Script,
    offset_s: int,
    seconds: int,
    width: int,
    height: int,
    fps: int,
    codec: str,
    audio: str,
    gop_s: int = 2,
    loops: int = 1,
) -> str:
    raw = f"v{FORMAT_VERSION}|{script.digest}|{offset_s}+{seconds}|{width}x{height}|{fps}|{codec}|{audio_kind(audio)}|g{gop_s}"
    length = f"{seconds}s"
    if loops > 1:
        raw += f"|x{loops}"
        length = f"{seconds}sx{loops}"
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    return f"scene-{script.digest[:8]}-{offset_s}+{length}-{codec}-{width}x{height}-{fps}fps-{digest}"


def ensure_scene_clip(
    script: Script,
    offset_s: int,
    seconds: int,
    codec: str = "h264",
    audio: str = "none",
    width: int = 640,
    height: int = 360,
    fps: int = 10,
    gop_s: int = 2,
    loops: int = 1,
) -> Path:
    """Path of the cached Hikvision-form clip of the script's timeline [offset_s, offset_s + seconds),
    made if missing.

    With `loops`, the clip lasts `seconds * loops`: the coded pictures of the slice repeated,
    timestamps running on, as `footage.ensure_clip` loops (seamless when the slice is the whole
    script, which starts and ends with nobody in view, and `seconds` a multiple of `gop_s`)."""
    if seconds <= 0 or offset_s < 0 or loops <= 0:
        raise ValueError("seconds and loops must be positive and offset_s not negative")
    kind = audio_kind(audio)
    folder = cache_dir() / "footage"
    folder.mkdir(parents=True, exist_ok=True)
    key = scene_clip_key(script, offset_s, seconds, width, height, fps, codec, audio, gop_s, loops)
    path = folder / f"{key}.hik"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(dir=folder, prefix=".scene-") as work:
        video_path = Path(work) / "video.es"
        encode(script, offset_s, seconds, width, height, fps, codec, video_path, gop_s)
        write_clip(path, video_path.read_bytes() * loops, codec, fps, kind, seconds, loops)
    return path
