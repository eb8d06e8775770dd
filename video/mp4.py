"""MP4 layout: the top-level boxes, and whether a file is web-playable before it has fully arrived."""

from __future__ import annotations

import struct
from pathlib import Path


def top_level_boxes(path: Path) -> list[str]:
    """Names of the MP4 top-level boxes, in file order."""
    names = []
    size_total = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size_total:
            fh.seek(offset)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            names.append(kind.decode("latin-1"))
            offset += size
    return names


def is_faststart(path: Path) -> bool:
    """The index (moov) comes before the media (mdat): a browser can start playing at once."""
    boxes = top_level_boxes(path)
    return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
