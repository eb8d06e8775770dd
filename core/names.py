"""The one rule that turns a name from outside into a safe single path component.

Names reach file paths from recorders (segment names), from configuration (recorder
names) and from uploaded files (their stems). All go through `sanitise_name`, so a hostile
device, a typo in the inventory or a file called `$(rm -rf ~).mp4` can neither leave the
data folder nor put a shell metacharacter in a path.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Well under the 255 bytes a path component may take on common file systems, leaving room
# for what callers add around a name: a 17-character content-hash prefix, `.ps`, `.part`, `.mp4`.
MAX_NAME_LENGTH = 120


class UnsafeNameError(ValueError):
    """A name with nothing usable in it, or a path built from names that would leave its root."""


def sanitise_name(raw: str) -> str:
    """Map a device-, user- or file-given name to a safe single path component.

    Runs of characters other than `[A-Za-z0-9._-]` become `_`; leading dots are dropped so
    that the result is never `.`, `..` or a hidden file; the result is cut to
    MAX_NAME_LENGTH characters. A result with nothing but `_` left is refused.
    """
    cleaned = _UNSAFE.sub("_", raw).lstrip(".")[:MAX_NAME_LENGTH]
    if not cleaned.strip("_"):
        raise UnsafeNameError(f"name {raw!r} has no usable characters")
    return cleaned
