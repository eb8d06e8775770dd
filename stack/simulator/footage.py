"""Real footage for simulated cameras: scikit-image photographs turned into short videos.

A clip is made once per parameter set with ffmpeg (a gentle pan across the still picture,
so it is real video with motion), wrapped in Hikvision's download form by `psmux`, and
cached under `cache_dir()/footage/`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stack.paths import cache_dir
from stack.simulator import psmux

FFMPEG_TIMEOUT_S = 300
FORMAT_VERSION = 1  # bump when the way clips are made changes, so stale caches are not served


def _motorcycle() -> np.ndarray:
    from skimage import data

    return data.stereo_motorcycle()[0]


def _picture(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


SCENES: dict[str, Callable[[], np.ndarray]] = {
    "cat": _picture("chelsea"),
    "coffee": _picture("coffee"),
    "motorcycle": _motorcycle,
    "rocket": _picture("rocket"),
}

# What an ImageNet-1k classifier should say about each scene (any of these counts as right).
EXPECTED_LABELS: dict[str, tuple[str, ...]] = {
    "cat": ("tabby", "tiger cat", "Egyptian cat"),
    "coffee": ("espresso", "cup", "coffee mug"),
    "motorcycle": ("moped", "motor scooter", "crash helmet", "disk brake"),
    "rocket": ("missile", "projectile", "space shuttle"),
}

CODECS = ("h264", "h265")
AUDIO = {"none": None, "g711": "g711u", "g711u": "g711u", "g711a": "g711a"}
# Hikvision codecType strings as they appear in search results and channel lists.
CODEC_TYPE = {"h264": "H.264-BP", "h265": "H.265"}
VIDEO_CODEC_TYPE = {"h264": "H.264", "h265": "H.265"}
AUDIO_COMPRESSION = {"g711u": "G.711ulaw", "g711a": "G.711alaw"}


def audio_kind(audio: str) -> str:
    """Normalise a spec audio value ("none", "g711", "g711u", "g711a") to psmux's names."""
    if audio not in AUDIO:
        raise ValueError(f"unknown audio {audio!r}; expected one of {sorted(AUDIO)}")
    return AUDIO[audio] or "none"


def _run(args: list[str]) -> None:
    # Argument list built from validated names and numbers, no shell.
    result = subprocess.run(args, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.decode()[-2000:]}")


def _scene_png(scene: str, folder: Path) -> Path:
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; expected one of {sorted(SCENES)}")
    path = folder / f"scene-{scene}.png"
    if not path.exists():
        from skimage import io

        tmp = folder / f".scene-{scene}.{os.getpid()}.png"
        io.imsave(tmp, np.ascontiguousarray(SCENES[scene]()[..., :3]), check_contrast=False)
        tmp.replace(path)
    return path


def _encode_video(
    png: Path, codec: str, seconds: int, width: int, height: int, fps: int, out: Path, gop_s: int = 2
) -> None:
    # Scale to cover the frame with a 12 % margin, then let the crop window drift slowly
    # around the centre: real motion, while the subject stays well inside the picture.
    margin = 1.12
    cover = (
        f"scale=w='max({width}*{margin}/iw,{height}*{margin}/ih)*iw':"
        f"h='max({width}*{margin}/iw,{height}*{margin}/ih)*ih',"
        "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    )
    period = max(seconds, 4)
    pan = (
        f"crop={width}:{height}:"
        f"x='(iw-ow)/2*(1+0.9*sin(2*PI*t/{period}))':"
        f"y='(ih-oh)/2*(1+0.9*cos(2*PI*t/{period}))'"
    )
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    args += ["-loop", "1", "-framerate", str(fps), "-i", str(png), "-t", str(seconds)]
    args += ["-vf", f"{cover},{pan},format=yuv420p", "-r", str(fps)]
    _run([*args, *encoder_args(codec, fps * gop_s), str(out)])


def encoder_args(codec: str, gop: int) -> list[str]:
    """ffmpeg output options for a recorder's elementary stream: Annex B with an access unit
    delimiter before every picture (psmux cuts on them), parameter sets repeated at each key
    frame, no B-frames, a key frame every `gop` pictures."""
    if codec == "h264":
        args = ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline"]
        args += ["-g", str(gop), "-bf", "0", "-x264-params", "aud=1:repeat-headers=1"]
        return [*args, "-f", "h264"]
    if codec == "h265":
        args = ["-c:v", "libx265", "-preset", "veryfast", "-g", str(gop), "-bf", "0"]
        return [*args, "-x265-params", "aud=1:repeat-headers=1:log-level=error", "-f", "hevc"]
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


def encode_audio(kind: str, seconds: int, out: Path) -> None:
    # A quiet two-tone hum, like a camera microphone in a room.
    source = "sine=frequency=220:sample_rate=8000,volume=0.2"
    codec = "pcm_mulaw" if kind == "g711u" else "pcm_alaw"
    fmt = "mulaw" if kind == "g711u" else "alaw"
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    args += ["-f", "lavfi", "-i", source, "-t", str(seconds), "-ac", "1", "-ar", "8000"]
    _run([*args, "-c:a", codec, "-f", fmt, str(out)])


def clip_key(
    scene: str,
    codec: str,
    audio: str,
    seconds: int,
    width: int,
    height: int,
    fps: int,
    loops: int = 1,
    gop_s: int = 2,
) -> str:
    raw = f"v{FORMAT_VERSION}|{scene}|{codec}|{audio_kind(audio)}|{seconds}|{width}x{height}|{fps}"
    if gop_s != 2:
        raw += f"|g{gop_s}"
    length = f"{seconds}s"
    if loops > 1:
        raw += f"|x{loops}"
        length = f"{seconds * loops}s"
    digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
    return f"{scene}-{codec}-{audio_kind(audio)}-{length}-{width}x{height}-{fps}fps-{digest}"


def ensure_clip(
    scene: str,
    codec: str,
    audio: str,
    seconds: int,
    width: int = 640,
    height: int = 360,
    fps: int = 10,
    loops: int = 1,
    gop_s: int = 2,
) -> Path:
    """Path of the cached Hikvision-form clip (IMKH + PS) for these parameters, made if missing.

    With `loops`, the clip lasts `seconds * loops`: the coded pictures of `seconds` repeated,
    timestamps running on (the pan's period is the encoded length and `seconds` a whole number
    of I-frame intervals, so the loop is seamless). Long footage for the cost of a short encode.
    `gop_s` is the I-frame interval in seconds (2, as a recorder's default; `seconds` a multiple of it).
    """
    if seconds <= 0 or loops <= 0:
        raise ValueError("seconds and loops must be positive")
    kind = audio_kind(audio)
    folder = cache_dir() / "footage"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{clip_key(scene, codec, audio, seconds, width, height, fps, loops, gop_s)}.hik"
    if path.exists():
        return path
    png = _scene_png(scene, folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".work-") as work:
        work_dir = Path(work)
        video_path = work_dir / "video.es"
        _encode_video(png, codec, seconds, width, height, fps, video_path, gop_s)
        write_clip(path, video_path.read_bytes() * loops, codec, fps, kind, seconds, loops)
    return path


def write_clip(
    path: Path, video: bytes, codec: str, fps: int, kind: str, seconds: int, loops: int = 1
) -> None:
    """Mux an elementary stream (and `seconds` of G.711 hum, `loops` times, when `kind` is not
    "none") into Hikvision form at `path`, atomically: a reader never sees half a clip."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".mux-") as work:
        work_dir = Path(work)
        audio_bytes = b""
        if kind != "none":
            audio_path = work_dir / "audio.g711"
            encode_audio(kind, seconds, audio_path)
            audio_bytes = audio_path.read_bytes() * loops
        tmp = work_dir / "clip.hik"
        with tmp.open("wb") as out:
            for piece in psmux.mux(video, codec, fps, audio_bytes, kind):
                out.write(piece)
        tmp.replace(path)
