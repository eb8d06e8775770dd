"""Transcode and frame sampling on the simulator's footage, with hostile file names."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.errors import is_retryable
from stack.simulator.footage import ensure_clip
from tests.polling import wait_until
from video.command import CommandFailed
from video.frames import FrameSamplingError, sample_frames
from video.mp4 import is_faststart
from video.probe import CorruptMedia, probe
from video.transcode import TranscodeOptions, transcode_file

HOSTILE = "cam 1 'quoted' \"dq\"; rm -rf ~ $(touch pwned) `id` Łódź 北京"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for codec, audio in (("h264", "g711u"), ("h265", "none")):
        src = ensure_clip("cat", codec, audio, 4, width=320, height=240, fps=10)
        made[codec] = folder / f"{HOSTILE} {codec}.ps"
        shutil.copyfile(src, made[codec])
    return made


def test_h264_is_remuxed_with_aac_and_faststart(clips, tmp_path):
    dst = tmp_path / f"{HOSTILE}.mp4"
    result = transcode_file(clips["h264"], dst, TranscodeOptions())
    assert result.mode == "remux" and not result.reused
    out = probe(dst)
    assert (out.video_codec, out.audio_codec) == ("h264", "aac")
    assert abs(out.duration_s - 4) < 1 and is_faststart(dst)
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert not list(tmp_path.glob("*.part.mp4"))


def test_h265_is_reencoded_and_audio_can_be_dropped(clips, tmp_path):
    dst = tmp_path / "out.mp4"
    result = transcode_file(clips["h265"], dst, TranscodeOptions(audio="drop"))
    assert (result.mode, result.source_codec) == ("x264", "hevc")
    out = probe(dst)
    assert out.video_codec == "h264" and out.audio_codec is None


def test_existing_output_is_reused_only_when_made_from_the_same_key(clips, tmp_path):
    dst = tmp_path / "out.mp4"
    transcode_file(clips["h264"], dst, TranscodeOptions(), made_from="seg/1000/opts-a")
    assert probe(dst).comment == "seg/1000/opts-a"
    mtime = dst.stat().st_mtime_ns
    again = transcode_file(clips["h264"], dst, TranscodeOptions(), made_from="seg/1000/opts-a")
    assert again.reused and dst.stat().st_mtime_ns == mtime
    # Other footage under the same name (or other options): the file on disk is not this output.
    other = transcode_file(clips["h265"], dst, TranscodeOptions(), made_from="seg/2000/opts-a")
    assert not other.reused and other.source_codec == "hevc"
    assert probe(dst).comment == "seg/2000/opts-a"


def test_handbrake_command_is_available(clips, tmp_path):
    dst = tmp_path / "hb.mp4"
    result = transcode_file(clips["h265"], dst, TranscodeOptions(engine="handbrake"))
    assert result.mode == "handbrake"
    assert probe(dst).video_codec == "h264" and is_faststart(dst)


def test_corrupt_input_fails_with_a_clear_error_and_leaves_nothing(tmp_path):
    bad = tmp_path / "broken.ps"
    bad.write_bytes(b"IMKH" + bytes(36) + b"\x00\x00\x01\xba" + b"garbage" * 1000)
    dst = tmp_path / "broken.mp4"
    with pytest.raises(CorruptMedia, match="broken.ps"):
        transcode_file(bad, dst, TranscodeOptions())
    assert not dst.exists() and not list(tmp_path.glob("*.part.mp4"))


def test_frames_are_sampled_on_whole_seconds_in_batches(clips):
    batches = list(sample_frames(clips["h264"], 224, fps=1.0, batch=3))
    offsets = [o for os_, _ in batches for o in os_]
    assert offsets == [0.0, 1.0, 2.0, 3.0]
    assert [b.shape for _, b in batches] == [(3, 224, 224, 3), (1, 224, 224, 3)]
    assert batches[0][1].std() > 10  # a picture, not a blank frame


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory) -> Path:
    """6 s at 10 fps, losslessly coded, frame n painted grey level 4 * n: a frame says its number."""
    frames = np.repeat(np.arange(60, dtype=np.uint8) * 4, 64 * 64 * 3).tobytes()
    path = tmp_path_factory.mktemp("numbered") / "numbered.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x64",
         "-r", "10", "-i", "pipe:0", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", "-g", "20",
         "-bf", "0", str(path)],
        input=frames, check=True, timeout=60,
    )  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("start", "expected_frames"),
    [
        (datetime(2026, 11, 1, 2, 0, 0, tzinfo=UTC), [0, 10, 20, 30, 40, 50]),
        # Starts 0.4 s before a whole second: instants at 0.4 s, 1.4 s, ... of the video.
        (datetime(2026, 11, 1, 2, 0, 0, tzinfo=UTC) - timedelta(seconds=0.4), [4, 14, 24, 34, 44, 54]),
    ],
)
def test_the_frame_taken_for_an_instant_is_the_one_on_screen_then(numbered_video, start, expected_frames):
    batches = list(sample_frames(numbered_video, 32, fps=1.0, batch=4, start=start))
    taken = [round(float(frame.mean()) / 4) for _, batch in batches for frame in batch]
    offsets = [o for os_, _ in batches for o in os_]
    assert taken == expected_frames
    assert offsets == pytest.approx([n / 10 for n in expected_frames], abs=1e-3)


def test_key_frame_screening_takes_each_key_frame_at_its_own_time(numbered_video):
    # The numbered video has a key frame every 20 frames (2 s); `start` does not move them.
    start = datetime(2026, 11, 1, 2, 0, 0, tzinfo=UTC) - timedelta(seconds=0.4)
    batches = list(sample_frames(numbered_video, 32, batch=2, start=start, key_frames=True))
    taken = [round(float(frame.mean()) / 4) for _, batch in batches for frame in batch]
    offsets = [o for os_, _ in batches for o in os_]
    assert taken == [0, 20, 40]
    assert offsets == pytest.approx([0.0, 2.0, 4.0], abs=1e-3)
    assert [len(b) for _, b in batches] == [2, 1]


def test_frame_sampling_of_garbage_fails(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(FrameSamplingError, match="garbage.mp4"):
        list(sample_frames(bad, 224))


def test_corrupt_input_is_not_retryable():
    assert not is_retryable(CorruptMedia("x.ps: no video stream"))
    assert not is_retryable(CommandFailed("ffmpeg on x.ps", 1, ["Invalid data found"]))
    assert is_retryable(CommandFailed("ffmpeg on x.ps", 124, []))
    assert not is_retryable(FrameSamplingError("x.mp4: ffmpeg exited with 1"))
    assert not is_retryable(OSError("disk full"))  # not a service's error: the policy does not guess


def _encoders(dst: Path) -> list[int]:
    """Pids of this process's children encoding to `dst`'s temporary file with libx264."""
    me, found = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if (
            parent == me
            and b"libx264" in argv
            and str(dst.with_name(dst.stem + ".part.mp4")).encode() in argv
        ):
            found.append(int(entry.name))
    return found


def test_an_encoder_killed_mid_run_fails_retryable_and_leaves_nothing(clips, tmp_path):
    """A real x264 run through `transcode_file`, SIGKILLed while it encodes (what the OOM killer does)."""
    dst = tmp_path / "killed.mp4"
    # The slowest x264 preset on the H.265 clip: the encode lasts long enough to be caught running.
    options = TranscodeOptions(preset="placebo", audio="drop")
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(transcode_file, clips["h265"], dst, options)
        found = wait_until("the x264 encoder running", lambda: _encoders(dst) or running.done(), 120, 0.01)
        assert not running.done(), running.result()
        (encoder,) = found
        os.kill(encoder, signal.SIGKILL)
        with pytest.raises(CommandFailed, match=r"ffmpeg on .* timed out or was killed") as killed:
            running.result(timeout=120)
    assert killed.value.returncode == -signal.SIGKILL
    assert killed.value.retryable and is_retryable(killed.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the output nor its .part.mp4
