"""A simulated recorder of a test's own: its simulator spec, and its block and limit registered."""

from __future__ import annotations

from datetime import datetime

from pydantic import SecretStr

from stack.ports import free_port

PASSWORD = "own-Pa55"


def one_channel_spec(name: str, start: datetime, end: datetime, segment_seconds: int, **channel: str) -> dict:
    """A simulator spec with one recorder, channel 1 recording [start, end) (naive = device time, UTC)."""
    recorder = {
        "name": name, "port": free_port(), "username": "admin", "password": PASSWORD,
        "segment_seconds": segment_seconds, "recording_start": start.replace(tzinfo=None).isoformat(),
        "recording_end": end.replace(tzinfo=None).isoformat(),
        "channels": [{"id": 1, "scene": "coffee", "codec": "h264", "audio": "none", **channel}],
    }  # fmt: skip
    return {"width": 320, "height": 240, "fps": 10, "recorders": [recorder]}


def register(spec: dict, channels: tuple[int, ...] | list[int] = (1,)) -> None:
    """The spec's recorder as a HikvisionRecorder block with its limit (and in the run form)."""
    from blocks.recorder import HikvisionRecorder
    from flows.recorders import upsert_recorder

    (recorder,) = spec["recorders"]
    block = HikvisionRecorder(
        host="127.0.0.1", port=recorder["port"], password=SecretStr(PASSWORD), channels=list(channels)
    )
    upsert_recorder(recorder["name"], block)
