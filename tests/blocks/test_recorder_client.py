"""ISAPIClient against the recorder simulator: what only real sockets and a real device show.

Digest SHA-256 and MD5 against the simulator's own implementation, a firmware taking one
download body shape end to end, dropped connections, silence beyond the read timeout,
nothing listening, and a large download's memory. Everything the client decides from
the device's answers is tested without a socket in test_isapi_client.py.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from blocks.recorder import (
    CorruptDownload,
    HikvisionRecorder,
    ISAPIClient,
    RecorderUnavailable,
    Recording,
)
from core.errors import is_retryable
from stack.ports import free_port
from stack.simulator import control

PASSWORD = "s3cret-Pa55word"
SEGMENT_SECONDS = 2
# nvr-east8: UTC+8, SHA-256 digest, wants <trackList>; nvr-west5: UTC-5, MD5, <trackIDList>.
EAST_START_LOCAL = datetime(2026, 3, 1, 9, 0, 0)
WEST_START_LOCAL = datetime(2026, 3, 1, 19, 0, 0)


def _recorder_spec(name: str, port: int, tz: str, algorithm: str, track_element: str, start: datetime):
    return {
        "name": name,
        "port": port,
        "username": "admin",
        "password": PASSWORD,
        "timezone": tz,
        "digest_algorithm": algorithm,
        "track_element": track_element,
        "segment_seconds": SEGMENT_SECONDS,
        "recording_start": start.isoformat(),
        "recording_end": (start + timedelta(seconds=SEGMENT_SECONDS * 3)).isoformat(),
        "channels": [{"id": 1, "scene": "cat", "codec": "h264", "audio": "none"}],
    }


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    ports = {"nvr-east8": free_port(), "nvr-west5": free_port()}
    spec = {
        "width": 160,
        "height": 96,
        "fps": 5,
        "recorders": [
            _recorder_spec(
                "nvr-east8", ports["nvr-east8"], "CST-8:00:00", "SHA-256", "trackList", EAST_START_LOCAL
            ),
            _recorder_spec(
                "nvr-west5", ports["nvr-west5"], "EST5:00:00", "MD5", "trackIDList", WEST_START_LOCAL
            ),
        ],
    }
    # The first run renders footage with ffmpeg; later runs hit the cache.
    with control.running(spec, tmp_path_factory.mktemp("sim")):
        yield ports


@pytest.fixture(autouse=True)
def clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    if "simulator" not in request.fixturenames:
        yield
        return
    ports = request.getfixturevalue("simulator")
    for port in ports.values():
        control.reset_faults(port)
        control.reset_stats(port)
    yield
    for port in ports.values():
        control.reset_faults(port)


def block_for(port: int, read_timeout: float = 10.0) -> HikvisionRecorder:
    return HikvisionRecorder(
        host="127.0.0.1", port=port, password=PASSWORD, connect_timeout=2.0, read_timeout=read_timeout
    )


def connect(ports: dict[str, int], name: str, **kwargs) -> ISAPIClient:
    return block_for(ports[name], **kwargs).named(name).connect()


def west_recordings(client: ISAPIClient) -> list[Recording]:
    """Every recording of channel 1; searching first also leaves the client's digest challenge cached."""
    return client.search(1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))


def first_west_recording(ports: dict[str, int]) -> Recording:
    with connect(ports, "nvr-west5") as client:
        return client.search(1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))[0]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- digest auth against the simulator's own implementation ----------------------------------------


@pytest.mark.parametrize(("name", "algorithm"), [("nvr-east8", "SHA-256"), ("nvr-west5", "MD5")])
def test_digest_search_and_download_over_a_real_socket(
    simulator: dict[str, int], tmp_path: Path, name: str, algorithm: str
) -> None:
    truth = control.segments(simulator[name])
    with connect(simulator, name) as client:
        assert client.device_info()["deviceName"] == name
        found = client.search(1, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
        result = client.download(found[0], tmp_path)
    assert [r.name for r in found] == [s["name"] for s in truth]
    assert result.bytes == found[0].size == truth[0]["size"] == result.path.stat().st_size
    assert result.path.read_bytes()[:4] == b"IMKH"
    stats = control.stats(simulator[name])
    # One challenge for the client's first request; every later request answers it straight away.
    assert stats["requests_by_path"]["/ISAPI/System/deviceInfo"] == 2
    assert stats["downloads_completed"] == 1


# -- firmware that takes one shape of download body ----------------------------------------------------


def test_download_falls_back_to_the_body_shape_the_firmware_takes(
    simulator: dict[str, int], tmp_path: Path
) -> None:
    port = simulator["nvr-west5"]
    control.set_faults(port, download_body="hikvision")
    with connect(simulator, "nvr-west5") as client:
        first, second = west_recordings(client)[:2]
        results = [client.download(first, tmp_path), client.download(second, tmp_path)]
    for rec, result in zip((first, second), results, strict=True):
        assert not result.reused and result.bytes == rec.size == result.path.stat().st_size
    stats = control.stats(port)
    # isapi.org and bare bodies refused once each, for the first segment; the second went straight
    # to the hikvision.com body.
    assert stats["downloads_by_body"] == {"isapi": 1, "bare": 1, "hikvision": 2}
    assert stats["downloads_by_form"] == {"post_xml": 4}
    assert stats["refusals"] == {"badXmlContent": 2}
    assert stats["downloads_completed"] == 2


# -- what only a real socket shows ---------------------------------------------------------------------


def test_a_dropped_connection_mid_download_leaves_no_file(simulator: dict[str, int], tmp_path: Path) -> None:
    rec = first_west_recording(simulator)
    control.set_faults(simulator["nvr-west5"], drop_after_bytes=5000)
    with connect(simulator, "nvr-west5") as client:
        with pytest.raises((RecorderUnavailable, CorruptDownload)) as caught:
            client.download(rec, tmp_path)
    assert is_retryable(caught.value)
    assert caught.value.segment == rec.name and caught.value.channel == 1
    assert files_under(tmp_path) == []


def test_offline_recorder_is_unavailable(simulator: dict[str, int]) -> None:
    control.set_faults(simulator["nvr-west5"], offline=True)
    with connect(simulator, "nvr-west5") as client:
        with pytest.raises(RecorderUnavailable) as caught:
            client.device_info()
    assert is_retryable(caught.value)


def test_latency_beyond_read_timeout_is_unavailable(simulator: dict[str, int]) -> None:
    control.set_faults(simulator["nvr-west5"], latency_ms=1500)
    with connect(simulator, "nvr-west5", read_timeout=0.3) as client:
        with pytest.raises(RecorderUnavailable, match="timed out"):
            client.device_info()


def test_download_latency_beyond_read_timeout_leaves_no_file(
    simulator: dict[str, int], tmp_path: Path
) -> None:
    rec = first_west_recording(simulator)
    control.set_faults(simulator["nvr-west5"], latency_ms=1500)
    with connect(simulator, "nvr-west5", read_timeout=0.3) as client:
        with pytest.raises(RecorderUnavailable):
            client.download(rec, tmp_path)
    assert files_under(tmp_path) == []


def test_nothing_listening_is_unavailable() -> None:
    block = block_for(free_port())
    with block.named("nvr-gone").connect() as client:
        with pytest.raises(RecorderUnavailable, match="cannot connect") as caught:
            client.device_info()
    assert "recorder nvr-gone" in str(caught.value)


# -- a large download streamed to disk ----------------------------------------------------------------

BIG_SIZE = 48 * 1024 * 1024 + 7


class BigMediaHandler(BaseHTTPRequestHandler):
    """A device without auth serving one 48 MiB recording to any download request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(BIG_SIZE))
        self.end_headers()
        self.wfile.write(b"IMKH")
        block = bytes(256 * 1024)
        for _ in range((BIG_SIZE - 4) // len(block)):
            self.wfile.write(block)
        self.wfile.write(bytes((BIG_SIZE - 4) % len(block)))


@pytest.fixture
def big_media_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BigMediaHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_memory_does_not_grow_with_size(big_media_port: int, tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    rec = Recording(
        recorder="nvr-big",
        channel=1,
        track_id=101,
        start=start,
        end=start + timedelta(minutes=30),
        playback_uri="rtsp://10.0.0.1/Streaming/tracks/101/?name=big&size=" + str(BIG_SIZE),
        name="big",
        size=BIG_SIZE,
        codec="H.264",
    )
    with block_for(big_media_port).named("nvr-big").connect() as client:
        tracemalloc.start()
        try:
            result = client.download(rec, tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.bytes == BIG_SIZE == result.path.stat().st_size
    # One network read in flight plus buffers, not the 48 MiB body.
    assert peak < 8 * 1024 * 1024
