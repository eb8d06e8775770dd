"""What the simulator serves: recorders, their channels, clocks and recordings.

Recording times in the spec are the recorder's LOCAL wall-clock time; `timezone` is the POSIX
TZ string the device reports in `/ISAPI/System/time` (`CST-8:00:00` means UTC+8: POSIX offsets
count west of Greenwich). Daylight-saving rules after the offset are ignored.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DEMO_WINDOW_START = datetime(2026, 11, 1, 2, 0, 0, tzinfo=UTC)
DEMO_SEGMENT_SECONDS = 20
DEMO_SEGMENTS = 4

# `RecorderSpec.timezone` (the POSIX string) hides the class inside RecorderSpec's body.
FixedOffset = timezone

_POSIX_TZ = re.compile(r"^(?:<[^>]+>|[A-Za-z]{3,})([+-]?)(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?")


def parse_posix_tz(tz: str) -> timezone:
    """`CST-8:00:00` -> UTC+08:00; `EST5:00:00` -> UTC-05:00; `GMT0:00:00` -> UTC."""
    match = _POSIX_TZ.match(tz.strip())
    if not match:
        raise ValueError(f"not a POSIX TZ string: {tz!r}")
    sign, hours, minutes, seconds = match.groups()
    west = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
    return timezone(west if sign == "-" else -west)


@dataclass
class ChannelSpec:
    """One camera. `clip`, when set, is a ready Hikvision-form file (IMKH + PS) served as every
    segment of the channel instead of generated footage: benchmarks use it for very large segments.
    `scene`, `codec` and `audio` then only describe the channel in ISAPI answers.

    `sub_stream` ("640x360"), when set, makes the channel record its sub-stream too, as
    Hikvision's dual-stream recording does: track `<id>02` next to the main stream's `<id>01`,
    the same scene and codec at that size, in segments of the same times (`sub_clip`: a ready
    file instead).

    `script`, when set, replaces the still-photo pan with a scripted scene (`scenes.resolve`: a
    script JSON file, a demo script's name, or `generated[:<background>]`, made from
    `script_seed` for the recording's length); each segment shows its own slice of the script's
    timeline, which starts at `recording_start`. `scene` then only names the channel."""

    id: int
    scene: str
    codec: str = "h264"
    audio: str = "none"
    clip: str = ""
    sub_stream: str = ""
    sub_clip: str = ""
    script: str = ""
    script_seed: int = 0

    @property
    def sub_size(self) -> tuple[int, int] | None:
        """(width, height) of the recorded sub-stream; None when the channel records none."""
        if not self.sub_stream:
            return None
        width, _, height = self.sub_stream.partition("x")
        if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
            raise ValueError(f"channel {self.id}: sub_stream must be WIDTHxHEIGHT, not {self.sub_stream!r}")
        return int(width), int(height)


@dataclass
class RecorderSpec:
    name: str
    port: int
    username: str
    password: str
    recording_start: str
    recording_end: str
    channels: list[ChannelSpec]
    timezone: str = "GMT0:00:00"
    serial: str = ""
    model: str = "DS-7608NI-K2"
    digest_algorithm: str = "MD5"
    track_element: str = "trackIDList"
    segment_seconds: int = 20
    firmware: str = "V4.61.025"

    def __post_init__(self) -> None:
        given: list[ChannelSpec | dict[str, Any]] = list(self.channels)  # dicts when read from JSON
        self.channels = [c if isinstance(c, ChannelSpec) else ChannelSpec(**c) for c in given]
        for channel in self.channels:
            channel.sub_size  # noqa: B018  (checks the spelling of the sub-stream's size)
        if self.digest_algorithm not in ("MD5", "SHA-256"):
            raise ValueError(f"{self.name}: digest_algorithm must be MD5 or SHA-256")
        if self.track_element not in ("trackIDList", "trackList"):
            raise ValueError(f"{self.name}: track_element must be trackIDList or trackList")
        if self.segment_seconds <= 0:
            raise ValueError(f"{self.name}: segment_seconds must be positive")
        if not self.serial:
            self.serial = f"{self.model}{self.port:05d}AAWR{zlib.crc32(self.name.encode()):010d}"
        if self.start_local >= self.end_local:
            raise ValueError(f"{self.name}: recording_start must be before recording_end")

    @property
    def tz(self) -> FixedOffset:
        return parse_posix_tz(self.timezone)

    @property
    def start_local(self) -> datetime:
        return datetime.fromisoformat(self.recording_start).replace(tzinfo=None)

    @property
    def end_local(self) -> datetime:
        return datetime.fromisoformat(self.recording_end).replace(tzinfo=None)


@dataclass
class SimulatorSpec:
    recorders: list[RecorderSpec]
    width: int = 640
    height: int = 360
    fps: int = 10
    # The address every recorder listens on; a network namespace's own address in the cluster tests.
    host: str = "127.0.0.1"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        given: list[RecorderSpec | dict[str, Any]] = list(self.recorders)  # dicts when read from JSON
        self.recorders = [r if isinstance(r, RecorderSpec) else RecorderSpec(**r) for r in given]
        ports = [r.port for r in self.recorders]
        if len(set(ports)) != len(ports):
            raise ValueError("two recorders share a port")

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        return data


def spec_from_dict(data: dict) -> SimulatorSpec:
    known = {"recorders", "width", "height", "fps", "host"}
    extra = {k: v for k, v in data.items() if k not in known}
    return SimulatorSpec(
        recorders=data["recorders"],
        width=int(data.get("width", 640)),
        height=int(data.get("height", 360)),
        fps=int(data.get("fps", 10)),
        host=str(data.get("host", "127.0.0.1")),
        extra=extra,
    )


def load_spec(path: str | Path) -> SimulatorSpec:
    return spec_from_dict(json.loads(Path(path).read_text()))


def demo_window(
    footage_seconds: int = DEMO_SEGMENT_SECONDS, segments: int = DEMO_SEGMENTS
) -> tuple[datetime, datetime]:
    """The UTC window in which every demo channel has `segments` whole segments."""
    return DEMO_WINDOW_START, DEMO_WINDOW_START + timedelta(seconds=footage_seconds * segments)


def demo_spec(
    ports: list[int],
    password: str,
    footage_seconds: int = DEMO_SEGMENT_SECONDS,
    segments: int = DEMO_SEGMENTS,
    width: int = 640,
    height: int = 360,
    fps: int = 10,
    username: str = "admin",
    scripted: bool = False,
) -> dict:
    """Three recorders (nvr-01..03) recording the demo window plus one segment either side.

    `scripted` gives every channel one of `scenes.DEMO_SCRIPTS` (people and vehicles entering and
    leaving inside the window) instead of its still photo."""
    if len(ports) != 3:
        raise ValueError("demo_spec needs exactly 3 ports")
    start_utc, end_utc = demo_window(footage_seconds, segments)
    start_utc -= timedelta(seconds=footage_seconds)
    end_utc += timedelta(seconds=footage_seconds)
    layouts = [
        ("nvr-01", "GMT0:00:00", "DS-7608NI-K2", "MD5", "trackIDList",
         [ChannelSpec(1, "cat", "h264", "g711u"), ChannelSpec(2, "coffee", "h265", "none")]),
        ("nvr-02", "CST-8:00:00", "DS-7616NI-I2", "SHA-256", "trackList",
         [ChannelSpec(1, "motorcycle", "h265", "g711a"), ChannelSpec(2, "rocket", "h264", "none")]),
        ("nvr-03", "EST5:00:00", "DS-7732NI-K4", "MD5", "trackIDList",
         [ChannelSpec(1, "coffee", "h264", "none"), ChannelSpec(2, "cat", "h265", "g711u")]),
    ]  # fmt: skip
    if scripted:
        scripts = iter(
            ["demo-pasture", "demo-cliff", "demo-launch-pad", "demo-pasture", "demo-cliff", "demo-launch-pad"]
        )
        for layout in layouts:
            for channel in layout[5]:
                channel.script = next(scripts)
    recorders = []
    for port, (name, tz, model, algorithm, track_element, channels) in zip(ports, layouts, strict=True):
        local = parse_posix_tz(tz)
        recorders.append(
            RecorderSpec(
                name=name,
                port=port,
                username=username,
                password=password,
                timezone=tz,
                model=model,
                serial=f"{model}20260101CCRR{port:05d}WCVU",
                digest_algorithm=algorithm,
                track_element=track_element,
                recording_start=start_utc.astimezone(local).replace(tzinfo=None).isoformat(),
                recording_end=end_utc.astimezone(local).replace(tzinfo=None).isoformat(),
                segment_seconds=footage_seconds,
                channels=channels,
            )
        )
    return SimulatorSpec(recorders=recorders, width=width, height=height, fps=fps).to_dict()
