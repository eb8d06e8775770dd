"""detect_video on H.264 files made with ffmpeg, the tiny detector on the stack's model server."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from blocks.model_server import TFServingModel
from stack.tiny_model import make_tiny_detector, serve
from video.detect import DetectSettings, detect_video
from video.frames import sample_images
from video.motion import MotionSettings
from video.tracking import TrackingSettings

START = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
W, H = 640, 360


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    base = tmp_path_factory.mktemp("detector")
    labels = make_tiny_detector(base, image_size=416)
    with serve(base, "detector", max_batch=8) as running:
        block = TFServingModel(
            target=running.target,
            model_name="detector",
            kind="detector",
            input_size=416,
            labels=labels,
            batch_size=8,
        )
        with block.connect() as client:
            client.check_metadata()
            yield client


def square_video(path: Path, x: str, seconds: int, shown: tuple[float, float]) -> Path:
    """A bright 40 x 80 square on a dark scene at x(t), shown between the two times, 10 fps H.264."""
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"color=c=0x141414:s={W}x{H}:r=10:d={seconds}",
        "-f", "lavfi", "-i", f"color=c=white:s=40x80:r=10:d={seconds}",
        "-filter_complex", f"[0][1]overlay=x='{x}':y=140:enable='between(t,{shown[0]},{shown[1]})'",
        "-c:v", "libx264", "-g", "20", "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=120)  # noqa: S603
    return path


def test_full_frames_are_sampled_once_a_second_at_full_or_reduced_size(tmp_path):
    video = square_video(tmp_path / "walk.mp4", "40+50*(t-2)", 10, (2, 8))
    frames = list(sample_images(video, start=START))
    assert [round(t, 3) for t, _ in frames] == list(range(10))
    assert {f.rgb().shape for _, f in frames} == {(H, W, 3)}
    assert {f.grey().shape for _, f in frames} == {(H, W)}
    assert frames[0][1].rgb().max() < 60 and frames[3][1].rgb().max() > 200  # dark, then the square
    assert frames[0][1].limited_range and frames[3][1].grey().max() > 200  # the luma as decoded
    small = list(sample_images(video, max_width=320, start=START, key_frames=True))
    assert [round(t, 3) for t, _ in small] == [0, 2, 4, 6, 8]  # key frames every 20 frames
    assert {f.rgb().shape for _, f in small} == {(180, 320, 3)}
    assert {f.grey().shape for _, f in small} == {(180, 320)}


def test_a_square_walking_through_is_one_object(tmp_path, detector):
    video = square_video(tmp_path / "walk.mp4", "40+50*(t-2)", 10, (2, 8))
    found = detect_video(video, START, detector)
    assert (found.width, found.height, found.frames) == (W, H, 10)
    assert len(found.objects) == 1
    walker = found.objects[0]
    assert walker.label == "person" and walker.frames >= 5
    assert abs((walker.start - (START + timedelta(seconds=2))).total_seconds()) <= 1
    assert abs((walker.end - (START + timedelta(seconds=8))).total_seconds()) <= 1
    assert walker.thumbnail is not None and walker.thumbnail[:2] == b"\xff\xd8"
    at_4 = [b for b in found.boxes if b.at == START + timedelta(seconds=4)]
    assert len(at_4) == 1 and at_4[0].box == pytest.approx((140, 140, 180, 220), abs=4)  # in frame pixels
    every = detect_video(video, START, detector, DetectSettings(follow_every_s=0))
    seconds = sorted({round((b.at - START).total_seconds()) for b in every.boxes})
    assert seconds == [2, 3, 4, 5, 6, 7, 8]
    # Followed surely once seen twice, it is looked at every 2 s: fewer looks, the same object.
    assert found.crops < every.crops and len(every.objects) == 1
    assert (every.objects[0].start, every.objects[0].end) == (
        START + timedelta(seconds=2),
        START + timedelta(seconds=8),
    )

    whole = detect_video(video, START, detector, DetectSettings(regions=False))
    assert whole.detector_calls == whole.crops == whole.frames == 10
    assert len(whole.objects) == 1
    # motion first: dark still seconds cost no call, a look at the whole frame every 5 s
    assert found.crops < whole.crops + 3 and found.motion_frames <= 8


def test_nothing_moving_only_costs_the_periodic_look(tmp_path, detector):
    video = square_video(tmp_path / "empty.mp4", "0", 10, (20, 30))  # the square never shows
    found = detect_video(video, START, detector)
    assert found.objects == [] and found.boxes == [] and found.motion_frames == 0
    assert found.crops == 1  # the whole frame at 0 s; the next whole look is due at 30 s
    often = detect_video(video, START, detector, DetectSettings(whole_look_s=4))
    assert often.crops == often.detector_calls == 3  # at 0, 4 and 8 s


def test_a_square_that_stops_is_kept_by_the_periodic_look(tmp_path, detector):
    # It walks from 2 s to 5 s, then stands until 12 s; the background takes it in within seconds.
    video = square_video(tmp_path / "stop.mp4", "40+50*(min(t,5)-2)", 14, (2, 12))
    settings = DetectSettings(
        full_look_s=5, motion=MotionSettings(alpha_moving=0.5), tracking=TrackingSettings(lost_after_s=8)
    )
    found = detect_video(video, START, detector, settings)
    assert len(found.objects) == 1
    parked = found.objects[0]
    assert parked.start == START + timedelta(seconds=2) and parked.end >= START + timedelta(seconds=10)
    seen = {round((b.at - START).total_seconds()) for b in found.boxes}
    assert (
        10 in seen and 9 not in seen
    )  # no motion left at 9 s: at 10 s, only the look at open objects saw it


def test_an_object_still_there_at_the_end_of_the_video_ends_with_it(tmp_path, detector):
    # It walks from 2 s to 5 s, then stands to the end (13 s, the last sampled frame): the motion
    # fades within seconds and the periodic look is due at 15 s; the last frame looks at it.
    video = square_video(tmp_path / "stays.mp4", "40+50*(min(t,5)-2)", 14, (2, 14))
    found = detect_video(video, START, detector, DetectSettings(full_look_s=10))
    assert [(o.start, o.end) for o in found.objects] == [
        (START + timedelta(seconds=2), START + timedelta(seconds=13))
    ]


def test_a_bright_thing_on_the_scene_from_the_start_is_found_by_the_first_look(tmp_path, detector):
    video = square_video(tmp_path / "there.mp4", "300", 4, (0, 4))
    found = detect_video(video, START, detector, DetectSettings(full_look_s=2))
    assert len(found.objects) == 1 and found.objects[0].start == START
    assert np.isclose(found.objects[0].best_box[0], 300, atol=4)


def test_a_region_keeps_the_boxes_on_what_it_was_cut_around_and_the_whole_frame_all():
    """In a close-up around a walker the detector also sees a 'car' in the grass beside them."""
    from video.detect import _frame_boxes, _Pending
    from video.regions import View

    region = View(500, 200, 200)  # around the walker's motion box (580, 250, 620, 350)
    walker, tuft = ("person", 0.7, (0.4, 0.25, 0.6, 0.75)), ("car", 0.5, (0.02, 0.1, 0.3, 0.3))
    pending = _Pending(START, None, [region], [(580.0, 250.0, 620.0, 350.0)], [[walker, tuft]])
    assert [b.label for b in _frame_boxes(pending, W * 2, H * 2, 0.0, str)] == ["person"]
    whole = View(0, 0, 1280, whole=True)
    pending = _Pending(START, None, [whole], [], [[("car", 0.5, (0.3, 0.2, 0.35, 0.24))]])
    assert [b.label for b in _frame_boxes(pending, W * 2, H * 2, 0.0, str)] == ["car"]


def test_a_box_too_small_to_be_anything_is_dropped():
    """In a close-up around a standing person the detector reads a 15 px "car" beside their head."""
    from video.detect import _frame_boxes, _Pending
    from video.regions import View

    region = View(850, 300, 180)  # around the person (923, 350, 953, 410)
    standing = ("person", 0.6, (73 / 180, 50 / 180, 103 / 180, 110 / 180))  # 30 x 60 px
    texture = ("car", 0.46, (101 / 180, 48 / 180, 116 / 180, 59 / 180))  # 15 x 11 px
    pending = _Pending(START, None, [region], [(923.0, 350.0, 953.0, 410.0)], [[standing, texture]])
    min_side = DetectSettings().min_box_share * H * 2
    assert [b.label for b in _frame_boxes(pending, W * 2, H * 2, min_side, str)] == ["person"]


def test_a_passenger_is_not_someone_on_foot():
    """Heads in a bus's windows are "people" inside its box, above its middle, its wheels below;
    a person walking in front of it reaches across its middle."""
    from video.detect import _on_foot
    from video.tracking import FrameBox

    bus = FrameBox("bus", 0.6, (234, 446, 786, 694))
    window = FrameBox("person", 0.38, (289, 515, 319, 545))
    wheel = FrameBox("person", 0.45, (441, 600, 492, 690))
    walker = FrameBox("person", 0.7, (400, 500, 450, 640))
    s = DetectSettings()
    assert _on_foot([bus, window, wheel, walker], s.passengers, s.carriers) == [bus, walker]
    assert _on_foot([window], s.passengers, s.carriers) == [window]  # no vehicle in that frame
