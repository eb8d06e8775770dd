"""The unmodified hikload 1.1.4 CLI and our ISAPIClient against the same simulated recorders.

Both download every segment of a short window; each file hikload wrote must be byte-identical
to ours and to what the simulator lists in `/_sim/segments`. hikload only ever sends
`<trackIDList>`, so a recorder with `<trackList>` firmware refuses its search, while our client
falls back and exports everything.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bench.export import build_repeated_clip
from bench.hikload_env import ensure_hikload
from blocks.recorder import HikvisionRecorder
from stack.ports import free_port
from stack.simulator import control
from stack.simulator.footage import ensure_clip
from stack.simulator.recordings import build_catalogue
from stack.simulator.spec import ChannelSpec, RecorderSpec, parse_posix_tz

USER, PASSWORD = "admin", "Compat-Pass-42"
WIDTH, HEIGHT, FPS = 160, 96, 5
SEGMENT_S = 2
SEGMENTS = 4  # per channel; hikload's own paging (by start time) never starts below 40
START_LOCAL = datetime(2026, 5, 4, 10, 0, 0)
END_LOCAL = START_LOCAL + timedelta(seconds=SEGMENT_S * SEGMENTS)
HIKLOAD_TIMEOUT_S = 60
# nvr-md5: MD5 digest, <trackIDList>, three channels (one serving a given clip);
# nvr-sha: SHA-256 digest, <trackIDList>; nvr-sha-tracklist: SHA-256 digest, <trackList> firmware.
RECORDERS = {
    "nvr-md5": ("CST-8:00:00", "MD5", "trackIDList"),
    "nvr-sha": ("EST5:00:00", "SHA-256", "trackIDList"),
    "nvr-sha-tracklist": ("EST5:00:00", "SHA-256", "trackList"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _channels(name: str, given_clip: Path) -> list[dict]:
    channels = [{"id": 1, "scene": "cat", "codec": "h264", "audio": "none"}]
    if name == "nvr-md5":
        channels.append({"id": 2, "scene": "coffee", "codec": "h265", "audio": "g711u"})
        channels.append({"id": 3, "scene": "rocket", "codec": "h264", "clip": str(given_clip)})
    return channels


def _spec(ports: dict[str, int], given_clip: Path) -> dict:
    recorders = []
    for name, (tz, algorithm, track_element) in RECORDERS.items():
        recorders.append(
            {
                "name": name,
                "port": ports[name],
                "username": USER,
                "password": PASSWORD,
                "timezone": tz,
                "digest_algorithm": algorithm,
                "track_element": track_element,
                "recording_start": START_LOCAL.isoformat(),
                "recording_end": END_LOCAL.isoformat(),
                "segment_seconds": SEGMENT_S,
                "channels": _channels(name, given_clip),
            }
        )
    return {"width": WIDTH, "height": HEIGHT, "fps": FPS, "recorders": recorders}


@dataclass
class Exported:
    """What each side did against one recorder."""

    port: int
    truth: list[dict]  # /_sim/segments
    hikload_files: dict[str, Path]  # file name -> path
    hikload_log: str
    hikload_searches: int
    ours: dict[str, Path]  # segment name -> path
    our_searches: int


def _run_hikload(python: Path, port: int, tracks: list[int], out: Path) -> subprocess.CompletedProcess:
    out.mkdir(parents=True)
    args = [str(python), "-m", "hikload", "--server", f"127.0.0.1:{port}"]
    args += ["--username", USER, "--password", PASSWORD]
    # Device-local wall-clock times: hikload appends the Z itself.
    args += ["--starttime", START_LOCAL.isoformat(), "--endtime", END_LOCAL.isoformat()]
    args += ["--cameras", ",".join(map(str, tracks)), "--downloads", str(out)]
    # Keep the device's bytes: no RTSP/ffmpeg recording, no transcoding, no trimming.
    args += ["--videoformat", "mp4", "--no-ffmpeg", "--no-forcetranscoding", "--no-ui"]
    return subprocess.run(  # noqa: S603 - fixed argument list
        args, cwd=out, capture_output=True, text=True, timeout=HIKLOAD_TIMEOUT_S, check=False
    )


def _run_ours(name: str, port: int, tz: str, channels: list[int], out: Path) -> dict[str, Path]:
    zone = parse_posix_tz(tz)
    start, end = START_LOCAL.replace(tzinfo=zone), END_LOCAL.replace(tzinfo=zone)
    block = HikvisionRecorder(host="127.0.0.1", port=port, password=PASSWORD, read_timeout=20)
    files: dict[str, Path] = {}
    with block.named(name).connect() as client:
        for channel in channels:
            for recording in client.search(channel, start, end):
                files[recording.name] = client.download(recording, out).path
    return files


@pytest.fixture(scope="module")
def given_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip unlike the generated ones: a short clip's PS payload three times behind one header."""
    source = ensure_clip("rocket", "h264", "none", SEGMENT_S, WIDTH, HEIGHT, FPS)
    out = tmp_path_factory.mktemp("clip") / "given.hik"
    return build_repeated_clip(source, 3 * source.stat().st_size - 80, out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, given_clip: Path) -> dict[str, Exported]:
    hikload_python = ensure_hikload()  # made once per machine; seconds after that
    tmp = tmp_path_factory.mktemp("compat")
    ports = {name: free_port() for name in RECORDERS}
    with control.running(_spec(ports, given_clip), tmp):
        results: dict[str, Exported] = {}
        for name, port in ports.items():
            truth = control.segments(port)
            channels = sorted({s["track_id"] // 100 for s in truth})
            control.reset_stats(port)
            done = _run_hikload(hikload_python, port, [c * 100 + 1 for c in channels], tmp / "hikload" / name)
            assert done.returncode == 0, done.stderr[-3000:]
            hikload_searches = control.stats(port)["requests_by_path"].get("/ISAPI/ContentMgmt/search", 0)
            control.reset_stats(port)
            ours = _run_ours(name, port, RECORDERS[name][0], channels, tmp / "nvrflow")
            our_searches = control.stats(port)["requests_by_path"].get("/ISAPI/ContentMgmt/search", 0)
            hikload_files = {p.name: p for p in (tmp / "hikload" / name).rglob("*") if p.is_file()}
            results[name] = Exported(
                port, truth, hikload_files, done.stderr, hikload_searches, ours, our_searches
            )
        yield results


def _hikload_name(segment: dict) -> str:
    """hikload names a file after the segment's local start time and the track: YYYYmmddHHMMSS-101.mp4."""
    return f"{re.sub(r'[-T:]', '', segment['start'])}-{segment['track_id']}.mp4"


@pytest.mark.parametrize("recorder", ["nvr-md5", "nvr-sha"])
def test_hikload_and_nvrflow_get_the_same_bytes(exported: dict[str, Exported], recorder: str) -> None:
    result = exported[recorder]
    assert len(result.truth) == SEGMENTS * len({s["track_id"] for s in result.truth})
    # Every listed segment exactly once on each side, nothing else.
    assert sorted(result.hikload_files) == sorted(_hikload_name(s) for s in result.truth)
    assert sorted(result.ours) == sorted(s["name"] for s in result.truth)
    for segment in result.truth:
        theirs = result.hikload_files[_hikload_name(segment)]
        ours = result.ours[segment["name"]]
        assert theirs.stat().st_size == ours.stat().st_size == segment["size"], segment["name"]
        assert _sha256(theirs) == _sha256(ours), segment["name"]


def test_a_channel_serves_its_given_clip(exported: dict[str, Exported], given_clip: Path) -> None:
    result = exported["nvr-md5"]
    on_track_301 = [s for s in result.truth if s["track_id"] == 301]
    assert len(on_track_301) == SEGMENTS
    expected = _sha256(given_clip)
    for segment in on_track_301:
        assert segment["size"] == given_clip.stat().st_size
        assert _sha256(result.ours[segment["name"]]) == expected
        assert _sha256(result.hikload_files[_hikload_name(segment)]) == expected


def _search(port: int, element: str) -> httpx.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><CMSearchDescription version="1.0" '
        'xmlns="http://www.isapi.org/ver20/XMLSchema"><searchID>C0FFEE</searchID>'
        f"<{element}><trackID>101</trackID></{element}><timeSpanList><timeSpan>"
        f"<startTime>{START_LOCAL.isoformat()}Z</startTime><endTime>{END_LOCAL.isoformat()}Z</endTime>"
        "</timeSpan></timeSpanList><maxResults>40</maxResults><searchResultPostion>0</searchResultPostion>"
        "</CMSearchDescription>"
    )
    with httpx.Client(auth=httpx.DigestAuth(USER, PASSWORD), timeout=20) as client:
        return client.post(f"http://127.0.0.1:{port}/ISAPI/ContentMgmt/search", content=body)


def test_track_list_firmware_refuses_track_id_list(exported: dict[str, Exported]) -> None:
    strict, lenient = exported["nvr-sha-tracklist"].port, exported["nvr-sha"].port
    refused = _search(strict, "trackIDList")
    assert refused.status_code == 400
    assert "<subStatusCode>badXmlContent</subStatusCode>" in refused.text
    assert "<ResponseStatus" in refused.text
    accepted = _search(strict, "trackList")
    assert accepted.status_code == 200 and accepted.text.count("<searchMatchItem>") == SEGMENTS
    # Firmware that speaks <trackIDList> takes either spelling.
    for element in ("trackIDList", "trackList"):
        answer = _search(lenient, element)
        assert answer.status_code == 200 and answer.text.count("<searchMatchItem>") == SEGMENTS


def test_hikload_cannot_search_track_list_firmware_but_nvrflow_can(exported: dict[str, Exported]) -> None:
    result = exported["nvr-sha-tracklist"]
    # hikload's only search is refused (2 requests: it answers a fresh digest challenge every
    # call); it logs the failure, carries on and downloads nothing.
    assert result.hikload_searches == 2
    assert result.hikload_files == {}
    assert "Could not get recordings for channel 101" in result.hikload_log
    # Ours: one refused <trackIDList> search, then one page with <trackList>, then every segment.
    assert result.our_searches == 2
    assert sorted(result.ours) == sorted(s["name"] for s in result.truth)
    assert all(result.ours[s["name"]].stat().st_size == s["size"] for s in result.truth)


def test_channel_clip_must_exist_and_be_in_hikvision_form(tmp_path: Path) -> None:
    def recorder(clip: Path) -> RecorderSpec:
        return RecorderSpec(
            name="nvr-x",
            port=1,
            username=USER,
            password=PASSWORD,
            recording_start=START_LOCAL.isoformat(),
            recording_end=END_LOCAL.isoformat(),
            channels=[ChannelSpec(1, "cat", clip=str(clip))],
        )

    with pytest.raises(FileNotFoundError):
        build_catalogue(recorder(tmp_path / "missing.hik"), WIDTH, HEIGHT, FPS)
    not_media = tmp_path / "notes.txt"
    not_media.write_bytes(b"hello, not a clip")
    with pytest.raises(ValueError, match="IMKH"):
        build_catalogue(recorder(not_media), WIDTH, HEIGHT, FPS)
