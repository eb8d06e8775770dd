"""Motion on sampled frames: where in a frame something changed, so the detector looks only there.

A detector costs ~120 ms a look on two cores, and on a whole 1280x720 frame it misses people
shorter than a third of the frame; comparing a ~180 px high grey copy of the frame (blocks of 4 x 4
pixels at 720p: a far person in dull clothes, 40 px tall, still differs from the grass by 20 grey
levels there) with a running average of the scene costs a few milliseconds and says where to look
closely.

Frames are sampled a second apart (1 fps), not at the camera's 25 fps, so the rules differ from a
live stream's: a walking person moves by about their own width between frames, and the background
must adapt within seconds to the light. The background follows still pixels quickly and pixels
with motion slowly, so a moving person leaves no ghost behind, and a parked car fades into the
scene in about a minute (the detector's periodic whole-frame look keeps objects that stopped).

Lighting is not motion: the background is first brought into each frame's light by a gain and
an offset read from their quartiles, and clipped as the sensor clips (a cloud, the camera's
exposure or a switched light change the whole picture, an object only a part of it), and a frame
where most of the picture still differs (a scene cut, day/night switch) only resets the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-frame pixels, x1 and y1 exclusive
HIGHLIGHT = 200  # grey level above which some colour of a pixel may be clipped
Quartiles = tuple[float, float, float]


@dataclass(frozen=True)
class MotionSettings:
    """How motion is found; the defaults are tuned for frames sampled one second apart."""

    height: int = 180  # the small grey frame's height, in pixels: a 40 px person is ten of them
    threshold: float = 20.0  # grey levels (0..255) a pixel must differ from the background by
    min_area: int = 8  # small-frame pixels a changed area must cover, after dilation
    blur_sigma: float = 1.0
    dilate: int = 2  # 3x3 dilations: joins the parts of one object (8 frame pixels at 720p)
    alpha: float = 0.3  # background update of still pixels per frame
    alpha_moving: float = 0.03  # of pixels with motion, while they keep changing
    still_after: int = 4  # frames a changed pixel must stay as it was to fade in at `alpha`
    scene_change: float = 0.6  # share of the frame changed above which it is a new scene, not motion


class MotionDetector:
    """Motion boxes of one camera's successive frames (all of one size), in full-frame pixels."""

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()
        self._background: np.ndarray | None = None
        self._previous: tuple[np.ndarray, Quartiles] | None = None  # the last small frame
        self._still: np.ndarray | None = None  # per small pixel: frames it stayed as it was
        self._shape: tuple[int, int] | None = None

    def detect(self, frame: np.ndarray, limited_range: bool = False) -> list[Box]:
        """The boxes where `frame` (uint8 [H, W, 3] RGB, or [H, W] grey) differs from the scene so far.

        `limited_range`: the grey is a video's luma as decoded (16..235), stretched to 0..255 here
        so that the thresholds mean the same. The first frame only starts the background: it has
        no motion.
        """
        s = self.settings
        if self._shape is None:
            self._shape = (frame.shape[0], frame.shape[1])
        elif (frame.shape[0], frame.shape[1]) != self._shape:
            raise ValueError(f"frame of {frame.shape[:2]}, this detector's frames are {self._shape}")
        small = shrink_grey(frame, s.height)
        if limited_range:
            small = (small - np.float32(16)) * np.float32(255 / 219)
        small = ndimage.gaussian_filter(small, s.blur_sigma)
        lit = quartiles(small)  # of this frame's light, once: both comparisons use them
        previous, self._previous = self._previous, (small, lit)
        if self._background is None or previous is None or self._still is None:
            self._restart(small)
            return []
        background = self._background
        difference, gain = self._difference(background, quartiles(background), small, lit)
        if (difference > 1).mean() > s.scene_change:
            self._restart(small)
            return []
        # The larger the correction for light, the less exact it is (texture and colours do not all
        # follow one gain): motion must then stand out more, and steady light keeps the threshold.
        changed = difference > 1 + 3 * abs(math.log(gain))
        # What differs from the background but no longer from the last frames stopped, or is what
        # a parked car left behind when it drove off: it fades into the scene within a few seconds
        # and asks for no look (the detector's periodic look keeps objects that stopped).
        moved = self._difference(*previous, small, lit)[0] > 1
        self._still = np.where(moved, 0, self._still + 1)
        changed &= self._still < s.still_after
        if s.dilate:
            changed = ndimage.binary_dilation(changed, iterations=s.dilate)
        alpha = np.where(changed, s.alpha_moving, s.alpha).astype(np.float32)
        background += alpha * (small - background)
        return self._boxes(changed)

    def _restart(self, small: np.ndarray) -> None:
        self._background = small.copy()
        self._still = np.zeros(small.shape, dtype=np.int32)

    def _difference(
        self, reference: np.ndarray, reference_lit: Quartiles, small: np.ndarray, lit: Quartiles
    ) -> tuple[np.ndarray, float]:
        """How far `small` differs from `reference` brought into its light, in thresholds; the
        light's gain. `reference_lit` and `lit` are their `quartiles`."""
        expected, gain = _matched(reference, reference_lit, lit)
        # In highlights each colour clips on its own, so a grey level follows the light less than
        # linearly: there a change must be twice as large to count.
        threshold = self.settings.threshold
        return np.abs(small - expected) / np.where(expected > HIGHLIGHT, 2 * threshold, threshold), gain

    def _boxes(self, changed: np.ndarray) -> list[Box]:
        assert self._shape is not None
        height, width = self._shape
        labels, count = ndimage.label(changed)
        if not count:
            return []
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        factor = block_size(height, self.settings.height)
        boxes = []
        for index, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
            if areas[index] >= self.settings.min_area:
                x0, y0 = xs.start * factor, ys.start * factor
                boxes.append((x0, y0, min(xs.stop * factor, width), min(ys.stop * factor, height)))
        return boxes


def shrink_grey(frame: np.ndarray, height: int) -> np.ndarray:
    """A float32 grey copy about `height` pixels high: the mean of whole blocks of pixels.

    Blocks are square and of a whole number of pixels, so the copy is between `height` and twice
    as high, and the last rows and columns that fill no whole block are left out. Pillow does it
    in C, about a tenth of the time numpy takes for a 1280x720 frame.
    """
    factor = block_size(frame.shape[0], height)
    h, w = frame.shape[0] // factor, frame.shape[1] // factor
    image = Image.fromarray(frame)
    grey = image if image.mode == "L" else image.convert("L")
    return np.asarray(grey.reduce(factor, box=(0, 0, w * factor, h * factor)), dtype=np.float32)


def block_size(frame_height: int, height: int) -> int:
    """Side in frame pixels of the square block that makes one pixel of the small grey frame."""
    return max(1, frame_height // height)


def quartiles(picture: np.ndarray) -> Quartiles:
    """The picture's grey levels at a quarter, half and three quarters of its pixels, read from
    every other pixel of every other row (a quarter of the work, the same levels to a fraction
    of a grey level on a camera's picture)."""
    q1, median, q3 = np.percentile(picture[::2, ::2], (25, 50, 75))
    return float(q1), float(median), float(q3)


def _matched(background: np.ndarray, background_lit: Quartiles, lit: Quartiles) -> tuple[np.ndarray, float]:
    """The background as the camera would show it in a frame's light: with the gain and offset
    that bring its quartiles (`background_lit`) onto the frame's (`lit`), clipped to 0..255 as the
    sensor clips; and that gain.

    An object covering less than a quarter of the frame barely moves the quartiles; a change of
    light moves them all. A flat picture (a dark night scene) gets the offset only.
    """
    b1, b_median, b3 = background_lit
    q1, median, q3 = lit
    gain = 1.0
    if q3 - q1 >= 8 and b3 - b1 >= 8:
        gain = float(np.clip((q3 - q1) / (b3 - b1), 0.5, 2.0))
    expected = np.clip((background - np.float32(b_median)) * np.float32(gain) + np.float32(median), 0, 255)
    return expected, gain
