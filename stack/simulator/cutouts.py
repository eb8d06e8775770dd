"""People, vehicles and places for scripted scenes: real photographs that Debian and PyPI packages ship.

Every picture is read from the package that ships it, never copied into this repository, and
its licence is the one that package's own files state (`/usr/share/doc/<package>/copyright`,
scikit-image's `skimage/data/_fetchers.py` docstrings). The cut-outs are Tux Paint stamps:
photographs already cut out by their authors, with the cut in the PNG's alpha channel, so the
mask is the shipped one (no segmentation of ours to trust). Nothing here is fetched at run time:
a missing package is an error that names the `apt-get install` to run.

Photographs whose licence the shipping package does not state are left out: scikit-image's
`stereo_motorcycle` (Middlebury 2014 stereo set; its docstring names no licence) is one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_TEMPLATES = Path("/usr/share/tuxpaint/templates")
_STAMPS_PACKAGE = "tuxpaint-stamps-default"
_STAMPS_VERSION = "2022.06.04-1"
_DATA_PACKAGE = "tuxpaint-data"
_DATA_VERSION = "1:0.9.28-sdl2-1"
# debian/copyright of both packages: "Files: * ... License: GPL-2", whose text says "version 2
# of the License, or (at your option) any later version".
_TUXPAINT_LICENCE = "GPL-2+"


@dataclass(frozen=True)
class Cutout:
    """A photographed object cut out of its picture; `faces` is where its front points, so a
    renderer mirrors it to travel forwards."""

    name: str
    label: str  # COCO class name
    package: str  # "debian:<name>" or "pypi:<name>"
    version: str
    file: str
    licence: str
    faces: str  # "left" or "right"
    max_height: int  # px: at most twice the photo's own height, so an upscaled cut-out stays sharp


@dataclass(frozen=True)
class Background:
    """A photograph of a place, cropped to `crop` (x0, y0, x1, y1 as fractions of the picture)."""

    name: str
    package: str
    version: str
    file: str
    licence: str
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    note: str = ""


def _stamp(name: str, label: str, file: str, faces: str, photo_height: int) -> Cutout:
    return Cutout(
        name,
        label,
        f"debian:{_STAMPS_PACKAGE}",
        _STAMPS_VERSION,
        str(TUXPAINT_STAMPS / file),
        _TUXPAINT_LICENCE,
        faces,
        2 * photo_height,
    )


CUTOUTS: dict[str, Cutout] = {
    c.name: c
    for c in (
        _stamp("fireman-a", "person", "people/fireman240a.png", "left", 384),
        _stamp("fireman-b", "person", "people/fireman200b.png", "left", 400),
        _stamp("sedan", "car", "vehicles/auto/sedan.png", "right", 66),
        _stamp("convertible", "car", "vehicles/auto/sportscar2.png", "right", 66),
        _stamp("pickup", "truck", "vehicles/auto/truck.png", "right", 88),
        _stamp("garbage-truck", "truck", "vehicles/garbagetruck.png", "left", 232),
        _stamp("bus", "bus", "vehicles/masstransit/green_korean_bus.png", "left", 145),
    )
}

_SKIMAGE_DATA = "skimage/data"
BACKGROUNDS: dict[str, Background] = {
    b.name: b
    for b in (
        Background(
            "pasture",
            f"debian:{_DATA_PACKAGE}",
            _DATA_VERSION,
            str(TUXPAINT_TEMPLATES / "sheep.jpg"),
            _TUXPAINT_LICENCE,
            note="a fenced pasture with a flock of sheep far off (static distractors)",
        ),
        Background(
            "cliff",
            f"debian:{_DATA_PACKAGE}",
            _DATA_VERSION,
            str(TUXPAINT_TEMPLATES / "cliff.jpg"),
            _TUXPAINT_LICENCE,
            note="a rock face under a blue sky",
        ),
        Background(
            "launch-pad",
            "pypi:scikit-image",
            "0.26.0",
            f"{_SKIMAGE_DATA}/rocket.jpg",
            "public domain (SpaceX release; skimage.data.rocket docstring)",
            note="a launch pad at dusk, lamps lit: a night camera",
        ),
    )
}


def _path(file: str, package: str) -> Path:
    if package == "pypi:scikit-image":
        import skimage

        return Path(skimage.__file__).parent.parent / file
    path = Path(file)
    if not path.is_file():
        debian = package.removeprefix("debian:")
        raise FileNotFoundError(f"{path} is missing: apt-get install --no-install-recommends {debian}")
    return path


def _read(path: Path) -> np.ndarray:
    from skimage import io

    return np.asarray(io.imread(path))


@functools.lru_cache(maxsize=32)
def cutout_pixels(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(premultiplied RGB float32 HxWx3 in 0..255, alpha float32 HxW in 0..1), cropped to where
    the alpha is not zero, so the picture's height is the object's height."""
    if name not in CUTOUTS:
        raise ValueError(f"unknown cut-out {name!r}; expected one of {sorted(CUTOUTS)}")
    cutout = CUTOUTS[name]
    rgba = _read(_path(cutout.file, cutout.package))
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"{cutout.file} has no alpha channel")
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    # Stamps fade out at their edges; an alpha below 4 % is the fade's tail, not the object.
    rows = np.flatnonzero((alpha > 0.04).any(axis=1))
    cols = np.flatnonzero((alpha > 0.04).any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    alpha = alpha[box]
    rgb = rgba[box][..., :3].astype(np.float32) * alpha[..., None]
    rgb.setflags(write=False)
    alpha.setflags(write=False)
    return rgb, alpha


@functools.lru_cache(maxsize=8)
def background_pixels(name: str, width: int, height: int) -> np.ndarray:
    """The place as a uint8 HxWx3 frame: its crop scaled to cover the frame, centred."""
    from skimage.transform import resize

    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; expected one of {sorted(BACKGROUNDS)}")
    background = BACKGROUNDS[name]
    picture = _read(_path(background.file, background.package))[..., :3]
    x0, y0, x1, y1 = background.crop
    h, w = picture.shape[:2]
    picture = picture[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
    h, w = picture.shape[:2]
    scale = max(width / w, height / h)
    covered = resize(
        picture, (max(height, round(h * scale)), max(width, round(w * scale))), anti_aliasing=True
    )
    top = (covered.shape[0] - height) // 2
    left = (covered.shape[1] - width) // 2
    frame = np.clip(covered[top : top + height, left : left + width] * 255 + 0.5, 0, 255).astype(np.uint8)
    frame.setflags(write=False)
    return frame
