"""ISAPIClient against the recorder simulator: real sockets, digest auth, paging, downloads, faults."""

from __future__ import annotations

import pickle
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from blocks.isapi.errors import DownloadRefused, InsufficientPermissions, RecorderProtocolError
from blocks.recorder import (
    CorruptDownload,
    HikvisionRecorder,
    ISAPIClient,
    RecorderUnavailable,
    Recording,
    WrongCredentials,
)
from core.errors import is_retryable
from stack.ports import free_port
from stack.simulator import control

SAMPLES = Path(__file__).parent / "isapi_samples"
PASSWORD = "s3cret-Pa55word"
SEGMENT_SECONDS = 2
PAGED_SEGMENTS = 45  # more than one 40-match page
# nvr-east8: UTC+8, SHA-256 digest, wants <trackList>; nvr-west5: UTC-5, MD5, <trackIDList>;
# nvr-viewer: like nvr-west5, with a non-admin account for the permission tests.
EAST_START_LOCAL = datetime(2026, 3, 1, 9, 0, 0)
WEST_START_LOCAL = datetime(2026, 3, 1, 19, 0, 0)


def _recorder_spec(
    name: str,
    port: int,
    tz: str,
    algorithm: str,
    track_element: str,
    start: datetime,
    n: int,
    username: str = "admin",
):
    return {
        "name": name,
        "port": port,
        "username": username,
        "password": PASSWORD,
        "timezone": tz,
        "digest_algorithm": algorithm,
        "track_element": track_element,
        "segment_seconds": SEGMENT_SECONDS,
        "recording_start": start.isoformat(),
        "recording_end": (start + timedelta(seconds=SEGMENT_SECONDS * n)).isoformat(),
        "channels": [{"id": 1, "scene": "cat", "codec": "h264", "audio": "none"}],
    }


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    ports = {"nvr-east8": free_port(), "nvr-west5": free_port(), "nvr-viewer": free_port()}
    spec = {
        "width": 160,
        "height": 96,
        "fps": 5,
        "recorders": [
            _recorder_spec(
                "nvr-east8",
                ports["nvr-east8"],
                "CST-8:00:00",
                "SHA-256",
                "trackList",
                EAST_START_LOCAL,
                PAGED_SEGMENTS,
            ),
            _recorder_spec(
                "nvr-west5", ports["nvr-west5"], "EST5:00:00", "MD5", "trackIDList", WEST_START_LOCAL, 3
            ),
            _recorder_spec(
                "nvr-viewer",
                ports["nvr-viewer"],
                "EST5:00:00",
                "MD5",
                "trackIDList",
                WEST_START_LOCAL,
                2,
                username="viewer",
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


def block_for(
    port: int, password: str = PASSWORD, read_timeout: float = 10.0, username: str = "admin"
) -> HikvisionRecorder:
    return HikvisionRecorder(
        host="127.0.0.1",
        port=port,
        username=username,
        password=password,
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )


def connect(ports: dict[str, int], name: str, **kwargs) -> ISAPIClient:
    return block_for(ports[name], **kwargs).named(name).connect()


def west_recordings(client: ISAPIClient) -> list[Recording]:
    """Every recording of channel 1; searching first also leaves the client's digest challenge cached."""
    return client.search(1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))


def download_requests(port: int) -> int:
    return control.stats(port)["requests_by_path"].get("/ISAPI/ContentMgmt/download", 0)


def first_west_recording(ports: dict[str, int]) -> Recording:
    with connect(ports, "nvr-west5") as client:
        return client.search(1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))[0]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- device facts ------------------------------------------------------------------------------


def test_device_info_channels_and_clock(simulator: dict[str, int]) -> None:
    with connect(simulator, "nvr-east8") as client:
        info = client.device_info()
        assert info.get("model")
        assert client.channels() == [1]
        clock = client.clock()
        assert clock.utc_offset == timedelta(hours=8)
        assert clock.timezone == "CST-8:00:00"
        assert abs(clock.local_time - datetime.now(UTC)) < timedelta(minutes=5)
        assert client.clock() is clock  # cached per client


# -- search ------------------------------------------------------------------------------------


def test_search_pages_past_40_without_gaps_or_duplicates(simulator: dict[str, int]) -> None:
    truth = control.segments(simulator["nvr-east8"])
    assert len(truth) == PAGED_SEGMENTS
    with connect(simulator, "nvr-east8") as client:
        found = client.search(
            1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
        )
    assert [r.name for r in found] == [s["name"] for s in truth]
    assert len({r.playback_uri for r in found}) == PAGED_SEGMENTS
    # Local 09:00 on a UTC+8 recorder is 01:00 UTC.
    assert found[0].start == datetime(2026, 3, 1, 1, 0, 0, tzinfo=UTC)
    assert found[-1].end == datetime(2026, 3, 1, 1, 0, tzinfo=UTC) + timedelta(
        seconds=SEGMENT_SECONDS * PAGED_SEGMENTS
    )
    assert all(r.channel == 1 and r.track_id == 101 and r.recorder == "nvr-east8" for r in found)
    assert all(r.size == s["size"] for r, s in zip(found, truth, strict=True))
    searches = control.stats(simulator["nvr-east8"])["requests_by_path"]["/ISAPI/ContentMgmt/search"]
    # Two pages (40 + 5), plus one rejected trackIDList request if the device insists on trackList.
    assert searches in (2, 3)


def test_search_window_is_read_in_device_time(simulator: dict[str, int]) -> None:
    # 01:00:10-01:00:20 UTC is 09:00:10-09:00:20 on the device: segments 5..9 (2 s each).
    with connect(simulator, "nvr-east8") as client:
        found = client.search(
            1, datetime(2026, 3, 1, 1, 0, 10, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, 20, tzinfo=UTC)
        )
        before = control.stats(simulator["nvr-east8"])["requests_by_path"]["/ISAPI/ContentMgmt/search"]
        again = client.search(
            1, datetime(2026, 3, 1, 1, 0, 10, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, 20, tzinfo=UTC)
        )
    assert len(found) == 5
    assert found[0].start == datetime(2026, 3, 1, 1, 0, 10, tzinfo=UTC)
    assert found == again
    after = control.stats(simulator["nvr-east8"])["requests_by_path"]["/ISAPI/ContentMgmt/search"]
    assert after - before == 1  # the track-list spelling is settled: one request, one page


def test_search_outside_recordings_is_empty(simulator: dict[str, int]) -> None:
    with connect(simulator, "nvr-west5") as client:
        assert client.search(1, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)) == []


def test_search_west_of_greenwich(simulator: dict[str, int]) -> None:
    rec = first_west_recording(simulator)
    # Local 19:00 on a UTC-5 recorder is 00:00 UTC the next day: the day folder follows UTC.
    assert rec.start == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


# -- download ----------------------------------------------------------------------------------


def test_download_then_reuse(simulator: dict[str, int], tmp_path: Path) -> None:
    rec = first_west_recording(simulator)
    with connect(simulator, "nvr-west5") as client:
        result = client.download(rec, tmp_path)
        assert not result.reused
        assert result.path == tmp_path.resolve() / "nvr-west5" / "1" / "2026-03-02" / f"{rec.name}.ps"
        assert result.bytes == rec.size == result.path.stat().st_size
        assert result.path.read_bytes()[:4] == b"IMKH"
        again = client.download(rec, tmp_path)
    assert again.reused and again.path == result.path and again.bytes == rec.size
    assert files_under(tmp_path) == [result.path]
    assert control.stats(simulator["nvr-west5"])["downloads_completed"] == 1


def test_download_replaces_a_damaged_copy(simulator: dict[str, int], tmp_path: Path) -> None:
    rec = first_west_recording(simulator)
    with connect(simulator, "nvr-west5") as client:
        path = client.download(rec, tmp_path).path
        path.write_bytes(b"IMKH" + b"\0" * 10)  # truncated by an earlier crash, say
        result = client.download(rec, tmp_path)
    assert not result.reused and path.stat().st_size == rec.size


# -- faults ------------------------------------------------------------------------------------


def test_wrong_password_fails_at_once(simulator: dict[str, int]) -> None:
    with connect(simulator, "nvr-west5", password="not-the-password") as client:
        with pytest.raises(WrongCredentials) as caught:
            client.device_info()
    assert "wrong credentials for recorder nvr-west5 (user 'admin'): Unauthorized" in str(caught.value)
    assert caught.value.status_code == 401
    assert not is_retryable(caught.value)
    # One challenge, one answer refused: DigestAuth does not try again, nor does the client.
    assert control.stats(simulator["nvr-west5"])["requests_by_path"]["/ISAPI/System/deviceInfo"] == 2


def test_wrong_password_on_download_tries_no_other_form(simulator: dict[str, int], tmp_path: Path) -> None:
    port = simulator["nvr-west5"]
    with connect(simulator, "nvr-west5") as client:
        rec = west_recordings(client)[0]
        control.reset_stats(port)
        control.set_faults(port, wrong_password=True)
        with pytest.raises(WrongCredentials) as caught:
            client.download(rec, tmp_path)
    assert not is_retryable(caught.value)
    assert PASSWORD not in str(caught.value)
    # The cached challenge's answer, refused with a fresh challenge, that one answered and refused.
    assert download_requests(port) == 2
    assert control.stats(port)["downloads_by_form"] == {}
    assert files_under(tmp_path) == []


def test_wrong_password_fault_on_search(simulator: dict[str, int]) -> None:
    control.set_faults(simulator["nvr-east8"], wrong_password=True)
    with connect(simulator, "nvr-east8") as client:
        with pytest.raises(WrongCredentials) as caught:
            client.clock()
    assert PASSWORD not in str(caught.value)


def test_server_error_is_unavailable(simulator: dict[str, int]) -> None:
    control.set_faults(simulator["nvr-west5"], error_rate=1.0, error_status=503)
    with connect(simulator, "nvr-west5") as client:
        with pytest.raises(RecorderUnavailable, match="HTTP 503") as caught:
            client.search(1, datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert is_retryable(caught.value)
    assert "recorder nvr-west5" in str(caught.value)


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"drop_after_bytes": 5000}, (RecorderUnavailable, CorruptDownload)),
        ({"wrong_size": True}, (CorruptDownload,)),
    ],
)
def test_broken_downloads_leave_no_file(
    simulator: dict[str, int], tmp_path: Path, faults: dict, expected: tuple[type, ...]
) -> None:
    rec = first_west_recording(simulator)
    control.set_faults(simulator["nvr-west5"], **faults)
    with connect(simulator, "nvr-west5") as client:
        with pytest.raises(expected) as caught:
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


# -- permissions and download forms: 403 read from the device's words --------------------------------


def test_low_privilege_download_names_the_user_and_is_asked_once(
    simulator: dict[str, int], tmp_path: Path
) -> None:
    port = simulator["nvr-viewer"]
    control.set_faults(port, low_privilege="download")
    with connect(simulator, "nvr-viewer", username="viewer") as client:
        rec = west_recordings(client)[0]  # searching is allowed; downloading is not
        control.reset_stats(port)
        with pytest.raises(InsufficientPermissions) as caught:
            client.download(rec, tmp_path)
    error = caught.value
    assert str(error).startswith(
        "user 'viewer' lacks the rights for POST /ISAPI/ContentMgmt/download on recorder nvr-viewer: "
        "lowPrivilege (Invalid Operation)"
    )
    assert PASSWORD not in str(error)
    assert (error.username, error.status_code, error.device_status) == ("viewer", 403, "lowPrivilege")
    assert (error.channel, error.segment) == (1, rec.name)
    assert not is_retryable(error)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    # Exactly one request, refused once: no fallback form, no retry inside the client.
    assert download_requests(port) == 1
    assert control.stats(port)["refusals"] == {"lowPrivilege": 1}
    assert files_under(tmp_path) == []


def test_low_privilege_for_everything_but_device_info(simulator: dict[str, int]) -> None:
    port = simulator["nvr-viewer"]
    control.set_faults(port, low_privilege="all_but_device_info")
    with connect(simulator, "nvr-viewer", username="viewer") as client:
        assert client.device_info()["deviceName"] == "nvr-viewer"
        with pytest.raises(
            InsufficientPermissions, match="user 'viewer' lacks the rights for GET /ISAPI/System/time"
        ):
            west_recordings(client)
    assert control.stats(port)["refusals"] == {"lowPrivilege": 1}


@pytest.mark.parametrize(
    ("refused", "status", "sub_status", "expected_forms"),
    [
        # POST refused for its method: the same XML body by GET.
        ("post_xml", 403, "methodNotAllowed", {"post_xml": 1, "get_xml": 2}),
        ("post_xml", 405, "methodNotAllowed", {"post_xml": 1, "get_xml": 2}),
        # Only the query-string GET accepted.
        ("post_xml,get_xml", 403, "notSupport", {"post_xml": 1, "get_xml": 1, "get_query": 2}),
        ("post_xml,get_xml", 400, "badXmlContent", {"post_xml": 1, "get_xml": 1, "get_query": 2}),
    ],
)
def test_refused_download_form_falls_back_and_is_remembered(
    simulator: dict[str, int],
    tmp_path: Path,
    refused: str,
    status: int,
    sub_status: str,
    expected_forms: dict[str, int],
) -> None:
    port = simulator["nvr-west5"]
    control.set_faults(
        port,
        refuse_download_forms=refused,
        download_refusal_status=status,
        download_refusal_sub_status=sub_status,
    )
    with connect(simulator, "nvr-west5") as client:
        first, second = west_recordings(client)[:2]
        results = [client.download(first, tmp_path), client.download(second, tmp_path)]
    for rec, result in zip((first, second), results, strict=True):
        assert not result.reused and result.bytes == rec.size == result.path.stat().st_size
        assert result.path.read_bytes()[:4] == b"IMKH"
    # The refused forms were asked once, for the first segment; the second went straight to the one that worked.
    assert control.stats(port)["downloads_by_form"] == expected_forms
    assert control.stats(port)["downloads_completed"] == 2


def test_every_download_form_refused_names_forms_and_device_words(
    simulator: dict[str, int], tmp_path: Path
) -> None:
    port = simulator["nvr-west5"]
    control.set_faults(
        port, refuse_download_forms="post_xml,get_xml,get_query", download_refusal_sub_status="notSupport"
    )
    with connect(simulator, "nvr-west5") as client:
        rec = west_recordings(client)[0]
        with pytest.raises(DownloadRefused) as caught:
            client.download(rec, tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, RecorderProtocolError)
    for form in ("POST with XML body", "GET with XML body", "GET with playbackURI query"):
        assert f"{form}: HTTP 403 notSupport (Invalid Operation)" in message
    assert message.startswith("recorder nvr-west5 refused every download form tried: ")
    assert (caught.value.channel, caught.value.segment) == (1, rec.name)
    assert not is_retryable(caught.value)
    assert control.stats(port)["downloads_by_form"] == {"post_xml": 1, "get_xml": 1, "get_query": 1}
    assert files_under(tmp_path) == []


def test_a_server_error_on_download_is_not_taken_for_a_form_refusal(
    simulator: dict[str, int], tmp_path: Path
) -> None:
    port = simulator["nvr-west5"]
    with connect(simulator, "nvr-west5") as client:
        rec = west_recordings(client)[0]
        control.reset_stats(port)
        control.set_faults(port, fail_next=1, error_status=503)
        with pytest.raises(
            RecorderUnavailable, match="HTTP 503 for POST /ISAPI/ContentMgmt/download"
        ) as caught:
            client.download(rec, tmp_path)
    assert "deviceBusy (Device Error)" in str(caught.value)
    assert is_retryable(caught.value)
    assert download_requests(port) == 1  # retrying a 5xx is the task's job, not a reason to change form


# -- an older firmware: <trackList> only, GET-only downloads, overlapping pages ---------------------

OLD_FIRMWARE_SEGMENTS = 85
BIG_SIZE = 48 * 1024 * 1024 + 7
OLD_FIRMWARE_MEDIA = b"IMKH" + bytes(36) + b"\x00\x00\x01\xba" + bytes(2000)


class OldFirmwareHandler(BaseHTTPRequestHandler):
    """A device that refuses <trackIDList> and POST downloads, and repeats an item across pages."""

    protocol_version = "HTTP/1.1"
    requests_seen: list[tuple[str, str, str]] = []

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> str:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()

    def _handle(self) -> None:
        body = self._body()
        self.requests_seen.append((self.command, self.path, body))
        if self.path == "/ISAPI/System/deviceInfo":
            # This firmware has digest switched off: it offers Basic only.
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="DS-7104HGHI"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/ISAPI/System/time":
            self._reply(
                200,
                b"<Time><localTime>2026-03-01T12:00:00Z</localTime><timeZone>CST-5:30:00</timeZone></Time>",
            )
        elif self.path == "/ISAPI/ContentMgmt/search" and self.command == "POST":
            if "<trackIDList>" in body:
                self._reply(400, (SAMPLES / "response_status_bad_xml.xml").read_bytes())
                return
            position = int(body.split("<searchResultPostion>")[1].split("<")[0])
            first = max(0, position - 1)  # re-sends the previous page's last item
            items = list(range(OLD_FIRMWARE_SEGMENTS))[first : first + 40]
            more = first + 40 < OLD_FIRMWARE_SEGMENTS
            self._reply(200, old_firmware_page(list(reversed(items)), more))
        elif self.path == "/ISAPI/ContentMgmt/download" and "name=big" in body:
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_SIZE))
            self.end_headers()
            self.wfile.write(b"IMKH")
            block = bytes(256 * 1024)
            for _ in range((BIG_SIZE - 4) // len(block)):
                self.wfile.write(block)
            self.wfile.write(bytes((BIG_SIZE - 4) % len(block)))
        elif self.path == "/ISAPI/ContentMgmt/download" and self.command == "GET" and "playbackURI" in body:
            self._reply(200, OLD_FIRMWARE_MEDIA, "application/octet-stream")
        else:
            self._reply(405, b"<ResponseStatus><statusCode>4</statusCode></ResponseStatus>")

    do_GET = do_POST = _handle


def old_firmware_page(indexes: list[int], more: bool) -> bytes:
    start = datetime(2026, 3, 1, 8, 0, 0)
    items = []
    for index in indexes:
        begin, end = start + timedelta(minutes=index), start + timedelta(minutes=index + 1)
        name = "../../etc/passwd" if index == 0 else f"0000000{index:03d}"
        items.append(
            "<searchMatchItem><trackID>101</trackID><timeSpan>"
            f"<startTime>{begin:%Y-%m-%dT%H:%M:%S}Z</startTime><endTime>{end:%Y-%m-%dT%H:%M:%S}Z</endTime>"
            "</timeSpan><mediaSegmentDescriptor><playbackURI>"
            f"rtsp://10.0.0.1/Streaming/tracks/101/?starttime={begin:%Y%m%dT%H%M%S}Z&amp;"
            f"name={quote(name, safe='')}&amp;size={len(OLD_FIRMWARE_MEDIA)}"
            "</playbackURI></mediaSegmentDescriptor></searchMatchItem>"
        )
    status = "MORE" if more else "OK"
    return (
        f'<CMSearchResult xmlns="http://www.hikvision.com/ver10/XMLSchema"><responseStatusStrg>{status}'
        f"</responseStatusStrg><numOfMatches>{len(items)}</numOfMatches><matchList>{''.join(items)}"
        "</matchList></CMSearchResult>"
    ).encode()


@pytest.fixture
def old_firmware() -> Iterator[tuple[int, list[tuple[str, str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldFirmwareHandler)
    OldFirmwareHandler.requests_seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], OldFirmwareHandler.requests_seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_old_firmware_fallbacks_are_found_and_remembered(
    old_firmware: tuple[int, list[tuple[str, str, str]]], tmp_path: Path
) -> None:
    port, seen = old_firmware
    window = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    with block_for(port).named("nvr-old").connect() as client:
        found = client.search(1, *window)
        searches_first = sum(1 for m, p, _ in seen if p.endswith("/search"))
        client.search(1, *window)
        searches_second = sum(1 for m, p, _ in seen if p.endswith("/search")) - searches_first
        hostile, other = found[0], found[1]
        downloaded = client.download(hostile, tmp_path)
        client.download(other, tmp_path)
    # Every segment once, in time order, despite repeated and reversed pages; 08:00 at UTC+5:30 is 02:30 UTC.
    assert len(found) == OLD_FIRMWARE_SEGMENTS == len({r.playback_uri for r in found})
    assert [r.start for r in found] == sorted(r.start for r in found)
    assert found[0].start == datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    # 1 refused trackIDList + 3 pages, then 3 pages with trackList straight away.
    assert (searches_first, searches_second) == (4, 3)
    # POST refused once, GET used for the rest.
    downloads = [m for m, p, _ in seen if p.endswith("/download")]
    assert downloads == ["POST", "GET", "GET"]
    # The hostile name stays inside data_dir.
    assert downloaded.path == tmp_path.resolve() / "nvr-old" / "1" / "2026-03-01" / "_.._etc_passwd.ps"
    assert downloaded.path.read_bytes() == OLD_FIRMWARE_MEDIA
    assert not list(tmp_path.rglob("*.part"))


def test_a_401_without_a_digest_challenge_is_not_wrong_credentials(
    old_firmware: tuple[int, list[tuple[str, str, str]]],
) -> None:
    port, seen = old_firmware
    with block_for(port).named("nvr-old").connect() as client:
        with pytest.raises(RecorderProtocolError, match="without a digest challenge") as caught:
            client.device_info()
    assert not isinstance(caught.value, WrongCredentials)
    assert 'Basic realm="DS-7104HGHI"' in str(caught.value)
    assert not is_retryable(caught.value)
    assert len(seen) == 1  # nothing httpx could answer, so nothing answered


def test_download_memory_does_not_grow_with_size(
    old_firmware: tuple[int, list[tuple[str, str, str]]], tmp_path: Path
) -> None:
    port, _ = old_firmware
    start = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    rec = Recording(
        recorder="nvr-old",
        channel=1,
        track_id=101,
        start=start,
        end=start + timedelta(minutes=30),
        playback_uri="rtsp://10.0.0.1/Streaming/tracks/101/?name=big&size=" + str(BIG_SIZE),
        name="big",
        size=BIG_SIZE,
        codec="H.264",
    )
    with block_for(port).named("nvr-old").connect() as client:
        tracemalloc.start()
        try:
            result = client.download(rec, tmp_path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.bytes == BIG_SIZE == result.path.stat().st_size
    # One 1 MiB chunk in flight plus buffers, not the 48 MiB body.
    assert peak < 8 * 1024 * 1024
