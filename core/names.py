"""The safe-name rule: a device- or user-given name as one harmless path component."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 120


class UnsafeNameError(ValueError):
    pass


def safe_name(raw: str) -> str:
    """Runs of characters other than `[A-Za-z0-9._-]` become `_`, leading dots go (never `.`, `..` or
    a hidden file), at most MAX_NAME_LENGTH characters; a name with nothing usable is refused."""
    cleaned = _UNSAFE.sub("_", raw).lstrip(".")[:MAX_NAME_LENGTH]
    if not cleaned.strip("_"):
        raise UnsafeNameError(f"name {raw!r} has no usable characters")
    return cleaned
