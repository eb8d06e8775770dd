"""Motion on synthetic frames a second apart: a real photograph as the scene, things pasted on it."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from video.motion import MotionDetector, MotionSettings, shrink_grey


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return data.coffee()  # 400 x 600 RGB


def noisy(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame with a camera's sensor noise."""
    return np.clip(frame.astype(np.int16) + rng.integers(-4, 5, frame.shape), 0, 255).astype(np.uint8)


def with_patch(scene: np.ndarray, x: int, y: int, w: int = 30, h: int = 60, value: int = 250) -> np.ndarray:
    frame = scene.copy()
    frame[y : y + h, x : x + w] = value
    return frame


def contains(box, x0, y0, x1, y1, slack: int = 0) -> bool:
    return box[0] <= x0 + slack and box[1] <= y0 + slack and box[2] >= x1 - slack and box[3] >= y1 - slack


def test_static_frames_have_no_motion(scene):
    rng = np.random.default_rng(1)
    motion = MotionDetector()
    assert [motion.detect(noisy(scene, rng)) for _ in range(8)] == [[]] * 8


def test_a_moving_patch_is_found_in_full_frame_pixels(scene):
    rng = np.random.default_rng(2)
    motion = MotionDetector()
    for _ in range(3):
        assert motion.detect(noisy(scene, rng)) == []
    for step in range(8):
        x, y = 40 + 60 * step, 200
        boxes = motion.detect(noisy(with_patch(scene, x, y), rng))
        assert any(contains(b, x, y, x + 30, y + 60, slack=4) for b in boxes), (step, boxes)
        for b in boxes:  # the patch, and where it was a second ago; nothing else
            assert b[1] >= y - 20 and b[3] <= y + 80 and b[0] >= x - 100 and b[2] <= x + 60, (step, boxes)


def test_a_small_far_person_is_motion(scene):
    """A person 40 px tall in a 720 px frame is 5-6 px in the small grey frame."""
    frame = np.repeat(np.repeat(scene, 2, axis=0), 2, axis=1)[:720, :1280]  # 720 x 1200
    motion = MotionDetector()
    motion.detect(frame)
    boxes = motion.detect(with_patch(frame, 500, 300, w=16, h=40, value=230))
    assert any(contains(b, 500, 300, 516, 340, slack=8) for b in boxes), boxes


def test_a_small_person_little_brighter_than_the_grass_is_motion():
    """22 x 45 px, 24 grey levels above a plain scene: a far person in dull clothes at 720p."""
    rng = np.random.default_rng(5)
    grass = np.full((720, 1280), 110, dtype=np.uint8)
    motion = MotionDetector()
    for _ in range(3):
        assert motion.detect(noisy(grass, rng)) == []
    walker = grass.copy()
    walker[300:345, 600:622] += 24
    boxes = motion.detect(noisy(walker, rng))
    assert len(boxes) == 1 and contains(boxes[0], 600, 300, 622, 345), boxes


def test_luma_as_decoded_is_stretched_to_full_range():
    """Video range 16..235: the same step in the picture is fewer levels of luma than of grey."""
    flat = np.full((720, 1280), 110, dtype=np.uint8)
    step = flat.copy()
    step[300:360, 600:630] += 19  # 22 levels of full-range grey: motion, read as video range
    as_grey, as_luma = MotionDetector(), MotionDetector()
    as_grey.detect(flat)
    as_luma.detect(flat, limited_range=True)
    assert as_grey.detect(step) == [] and as_luma.detect(step, limited_range=True) != []


@pytest.mark.parametrize(
    "change",
    [
        lambda f: np.clip(f.astype(np.int16) + 45, 0, 255),
        lambda f: f * 0.6,
        lambda f: np.clip(f * 1.35, 0, 255),
    ],
    ids=["brighter-by-45", "darker-by-40-percent", "gain-1.35"],
)
def test_a_change_of_light_over_the_whole_frame_is_not_motion(scene, change):
    rng = np.random.default_rng(3)
    motion = MotionDetector()
    for _ in range(3):
        motion.detect(noisy(scene, rng))
    lit = change(scene).astype(np.uint8)
    assert motion.detect(noisy(lit, rng)) == []
    assert motion.detect(noisy(lit, rng)) == []
    boxes = motion.detect(noisy(with_patch(lit, 300, 100, value=5), rng))  # still sees what moves after
    assert any(contains(b, 300, 100, 330, 160, slack=4) for b in boxes), boxes


def test_a_new_scene_resets_the_background(scene):
    motion = MotionDetector()
    motion.detect(scene)
    other = data.astronaut()[:400, :512]
    other = np.pad(other, ((0, 0), (0, 88), (0, 0)))
    assert motion.detect(other) == []
    assert motion.detect(other) == []


def test_an_object_that_stops_fades_into_the_background(scene):
    motion = MotionDetector(MotionSettings(alpha_moving=0.3))
    motion.detect(scene)
    parked = with_patch(scene, 200, 200)
    seen = [bool(motion.detect(parked)) for _ in range(15)]
    assert seen[0] and not seen[-1]


def test_what_stops_or_a_parked_car_leaves_behind_fades_within_seconds_what_moves_does_not(scene):
    rng = np.random.default_rng(5)
    motion = MotionDetector()  # still_after 4
    motion.detect(noisy(scene, rng))

    def walker(step: int) -> np.ndarray:
        return with_patch(scene, 20 + 12 * step, 320, w=20, h=40)  # a walker, below

    parked = [motion.detect(noisy(with_patch(walker(i), 300, 60), rng)) for i in range(12)]
    assert any(contains(b, 300, 60, 330, 120, slack=4) for b in parked[0])  # it arrives: motion
    assert not any(b[1] < 200 for b in parked[-1])  # standing still, it asks for no look
    assert all(any(b[1] >= 300 for b in boxes) for boxes in parked)  # the walker, every frame
    # It drives off: the scene shows again where it stood, unlike the background there.
    gone = [motion.detect(noisy(walker(12 + i), rng)) for i in range(8)]
    assert any(any(contains(b, 300, 60, 330, 120, slack=4) for b in boxes) for boxes in gone[:2])
    assert not any(b[1] < 200 for b in gone[-1])  # the ghost faded within seconds
    assert all(any(b[1] >= 300 for b in boxes) for boxes in gone)


def test_frames_of_another_size_are_refused(scene):
    motion = MotionDetector()
    motion.detect(scene)
    with pytest.raises(ValueError, match="frame of"):
        motion.detect(scene[:200])


def test_shrink_grey_averages_whole_blocks():
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    frame[:7, :7] = 255
    small = shrink_grey(frame, 100)
    assert small.shape == (102, 182)
    assert small[0, 0] == pytest.approx(255, abs=0.1) and small[1, 1] == 0
