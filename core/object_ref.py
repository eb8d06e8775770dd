"""An object's reference in the review app's URLs: its `objects` table key as URL-safe text.

Made here for the app's pages and for the links in Prefect events and artifacts alike, so a link
from an alert opens the object it names.
"""

from __future__ import annotations

import base64
import binascii
import json

MAX_REF = 1024


class NotARef(ValueError):
    pass


def object_ref(recorder: str, channel: int, segment: str, object_id: str) -> str:
    key = json.dumps([recorder, int(channel), segment, object_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def parse_object_ref(ref: str) -> tuple[str, int, str, str]:
    """The table key (recorder, channel, segment, object_id) of a reference; NotARef when it is none."""
    if len(ref) > MAX_REF:
        raise NotARef("object id too long")
    try:
        key = json.loads(base64.urlsafe_b64decode(ref + "=" * (-len(ref) % 4)))
    except (binascii.Error, ValueError):
        raise NotARef("not an object id") from None
    if (
        not isinstance(key, list)
        or len(key) != 4
        or not all(isinstance(part, str) for part in (key[0], key[2], key[3]))
        or not isinstance(key[1], int)
        or isinstance(key[1], bool)
    ):
        raise NotARef("not an object id")
    return key[0], key[1], key[2], key[3]
