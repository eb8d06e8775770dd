"""The recorder simulator as a real process on real sockets, driven by an httpx ISAPI client."""

from __future__ import annotations

import html
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from stack.paths import PROJECT_ROOT
from stack.ports import HOST, free_port, is_listening
from stack.processes import terminate
from stack.simulator import control
from stack.simulator.footage import ensure_clip
from stack.simulator.spec import demo_spec, demo_window, load_spec, parse_posix_tz

USER, PASSWORD = "admin", "Sim-Pass-123"
SEGMENT_S = 5
# 4 minutes of 5-second segments on two channels: 96 matches, more than two pages of 40.
LONG_START = "2026-11-01T10:00:00"
LONG_END = "2026-11-01T10:04:00"
TIMEOUT = httpx.Timeout(30.0)


def _spec(ports: list[int]) -> dict:
    return {
        "width": 320,
        "height": 240,
        "fps": 10,
        "recorders": [
            {
                "name": "nvr-md5",
                "port": ports[0],
                "username": USER,
                "password": PASSWORD,
                "timezone": "CST-8:00:00",
                "model": "DS-7608NI-K2",
                "digest_algorithm": "MD5",
                "track_element": "trackIDList",
                "recording_start": LONG_START,
                "recording_end": LONG_END,
                "segment_seconds": SEGMENT_S,
                "channels": [
                    {"id": 1, "scene": "cat", "codec": "h264", "audio": "g711"},
                    {"id": 2, "scene": "coffee", "codec": "h265", "audio": "none"},
                ],
            },
            {
                "name": "nvr-sha",
                "port": ports[1],
                "username": USER,
                "password": PASSWORD,
                "timezone": "EST5:00:00",
                "model": "DS-7616NI-I2",
                "digest_algorithm": "SHA-256",
                "track_element": "trackList",
                "recording_start": "2026-11-01T05:00:00",
                "recording_end": "2026-11-01T05:00:10",
                "segment_seconds": SEGMENT_S,
                "channels": [{"id": 1, "scene": "rocket", "codec": "h265", "audio": "g711a"}],
            },
        ],
    }


@dataclass
class Simulator:
    ports: list[int]
    proc: subprocess.Popen

    @property
    def md5(self) -> str:
        return f"http://{HOST}:{self.ports[0]}"

    @property
    def sha(self) -> str:
        return f"http://{HOST}:{self.ports[1]}"

    def stop(self) -> int:
        return terminate(self.proc)


@contextmanager
def running_simulator(tmp: Path) -> Iterator[Simulator]:
    ports = [free_port(), free_port()]
    with control.running(_spec(ports), tmp, ready_timeout=180) as proc:
        yield Simulator(ports, proc)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with running_simulator(tmp_path_factory.mktemp("sim")) as simulator:
        yield simulator


@pytest.fixture
def client():
    with httpx.Client(auth=httpx.DigestAuth(USER, PASSWORD), timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean_faults(request):
    if "sim" in request.fixturenames:
        simulator = request.getfixturevalue("sim")
        for port in simulator.ports:
            control.reset_faults(port)
    yield
    if "sim" in request.fixturenames:
        for port in request.getfixturevalue("sim").ports:
            control.reset_faults(port)


def _search_body(tracks, start, end, max_results=40, position=0, element="trackIDList") -> str:
    ids = "".join(f"<trackID>{t}</trackID>" for t in tracks)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<CMSearchDescription version="1.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
        f"<searchID>C1A2B3-{position}</searchID><{element}>{ids}</{element}>"
        f"<timeSpanList><timeSpan><startTime>{start}</startTime><endTime>{end}</endTime>"
        f"</timeSpan></timeSpanList><maxResults>{max_results}</maxResults>"
        f"<searchResultPostion>{position}</searchResultPostion>"
        "<metadataList><metadataDescriptor>//recordType.meta.std-cgi.com</metadataDescriptor>"
        "</metadataList></CMSearchDescription>"
    )


def _items(xml: str) -> list[dict]:
    items = []
    for block in re.findall(r"<searchMatchItem>(.*?)</searchMatchItem>", xml, re.S):
        items.append(
            {
                "track": int(re.search(r"<trackID>(\d+)</trackID>", block).group(1)),
                "start": re.search(r"<startTime>(.*?)</startTime>", block).group(1),
                "end": re.search(r"<endTime>(.*?)</endTime>", block).group(1),
                "codec": re.search(r"<codecType>(.*?)</codecType>", block).group(1),
                "uri": html.unescape(re.search(r"<playbackURI>(.*?)</playbackURI>", block).group(1)),
            }
        )
    return items


def _tag(xml: str, name: str) -> str:
    return re.search(rf"<{name}>(.*?)</{name}>", xml, re.S).group(1)


def _first_uri(client, base, track=101, start="2026-11-01T10:00:00Z", end="2026-11-01T10:00:05Z") -> str:
    r = client.post(f"{base}/ISAPI/ContentMgmt/search", content=_search_body([track], start, end))
    assert r.status_code == 200, r.text
    return _items(r.text)[0]["uri"]


def _download_body(uri: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><downloadRequest version="1.0" '
        f'xmlns="http://www.isapi.org/ver20/XMLSchema"><playbackURI>{html.escape(uri)}</playbackURI>'
        "</downloadRequest>"
    )


def _ffprobe(path: Path, *extra: str) -> dict:
    out = subprocess.run(  # noqa: S603 - fixed argument list
        ["ffprobe", "-v", "error", *extra, "-show_entries",
         "stream=codec_type,codec_name,sample_rate:format=duration", "-of", "json", str(path)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


# -- spec and footage -------------------------------------------------------------------------


def test_posix_timezones_count_west_of_greenwich():
    assert parse_posix_tz("CST-8:00:00").utcoffset(None) == timedelta(hours=8)
    assert parse_posix_tz("EST5:00:00").utcoffset(None) == timedelta(hours=-5)
    assert parse_posix_tz("GMT0:00:00").utcoffset(None) == timedelta(0)


def test_demo_spec_covers_the_demo_window(tmp_path):
    spec_dict = demo_spec([free_port(), free_port(), free_port()], "pw", footage_seconds=20)
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(spec_dict))
    spec = load_spec(path)
    start_utc, end_utc = demo_window()
    assert start_utc.tzinfo is not None and end_utc - start_utc >= timedelta(seconds=80)
    assert {r.timezone for r in spec.recorders} == {"GMT0:00:00", "CST-8:00:00", "EST5:00:00"}
    assert any(r.digest_algorithm == "SHA-256" and r.track_element == "trackList" for r in spec.recorders)
    codecs = {c.codec for r in spec.recorders for c in r.channels}
    assert codecs == {"h264", "h265"}
    assert any(c.audio != "none" for r in spec.recorders for c in r.channels)
    for rec in spec.recorders:
        start = rec.start_local.replace(tzinfo=rec.tz)
        end = rec.end_local.replace(tzinfo=rec.tz)
        assert start <= start_utc and end >= end_utc
        assert (end_utc - start_utc) / timedelta(seconds=rec.segment_seconds) >= 4


@pytest.mark.parametrize(
    ("codec", "audio", "video_name", "audio_name"),
    [("h264", "g711", "h264", "pcm_"), ("h265", "g711a", "hevc", "pcm_alaw"), ("h265", "none", "hevc", None)],
)
def test_clip_is_hikvision_ps_that_ffprobe_reads(codec, audio, video_name, audio_name):
    path = ensure_clip("cat", codec, audio, 4, 320, 240, 10)
    assert path.read_bytes()[:4] == b"IMKH"
    assert path.read_bytes()[40:44] == b"\x00\x00\x01\xba"
    probe = _ffprobe(path)
    kinds = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
    assert kinds["video"] == video_name
    assert abs(float(probe["format"]["duration"]) - 4) <= 1
    if audio_name:
        assert kinds["audio"].startswith(audio_name)
    else:
        assert "audio" not in kinds
    skipped = _ffprobe(path, "-skip_initial_bytes", "40")
    assert any(s["codec_name"] == video_name for s in skipped["streams"])
    assert abs(float(skipped["format"]["duration"]) - 4) <= 1


# -- ISAPI ------------------------------------------------------------------------------------


def test_device_info_needs_the_right_credentials(sim, client):
    r = client.get(f"{sim.md5}/ISAPI/System/deviceInfo")
    assert r.status_code == 200
    assert 'xmlns="http://www.hikvision.com/ver20/XMLSchema"' in r.text
    assert _tag(r.text, "model") == "DS-7608NI-K2"
    anonymous = httpx.get(f"{sim.md5}/ISAPI/System/deviceInfo", timeout=TIMEOUT)
    assert anonymous.status_code == 401
    challenge = anonymous.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ") and 'qop="auth"' in challenge and 'realm="DS-' in challenge
    wrong = httpx.get(
        f"{sim.md5}/ISAPI/System/deviceInfo", auth=httpx.DigestAuth(USER, "nope"), timeout=TIMEOUT
    )
    assert wrong.status_code == 401


def test_sha256_recorder_challenges_with_sha256(sim, client):
    anonymous = httpx.get(f"{sim.sha}/ISAPI/System/deviceInfo", timeout=TIMEOUT)
    assert "algorithm=SHA-256" in anonymous.headers["WWW-Authenticate"]
    r = client.get(f"{sim.sha}/ISAPI/System/deviceInfo")
    assert r.status_code == 200 and _tag(r.text, "model") == "DS-7616NI-I2"


def test_time_reports_local_clock_and_posix_zone(sim, client):
    r = client.get(f"{sim.md5}/ISAPI/System/time")
    assert r.status_code == 200
    assert _tag(r.text, "timeZone") == "CST-8:00:00"
    local = datetime.fromisoformat(_tag(r.text, "localTime"))
    assert local.utcoffset() == timedelta(hours=8)


def test_streaming_channels_list_main_streams_with_codecs(sim, client):
    r = client.get(f"{sim.md5}/ISAPI/Streaming/channels")
    ids = re.findall(r"<id>(\d+)</id>", r.text)
    assert {"101", "201"} <= set(ids)
    assert "<videoCodecType>H.264</videoCodecType>" in r.text
    assert "<videoCodecType>H.265</videoCodecType>" in r.text


def test_search_pages_by_position_without_duplicates_or_gaps(sim, client):
    seen, statuses, position = [], [], 0
    while True:
        body = _search_body([101, 201], "2026-11-01T10:00:00Z", "2026-11-01T10:04:00Z", 64, position)
        r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/search", content=body)
        assert r.status_code == 200, r.text
        items = _items(r.text)
        assert int(_tag(r.text, "numOfMatches")) == len(items) <= 40
        statuses.append(_tag(r.text, "responseStatusStrg"))
        seen += items
        position += len(items)
        if statuses[-1] != "MORE":
            break
    assert statuses == ["MORE", "MORE", "OK"]
    total = 2 * 240 // SEGMENT_S
    assert len(seen) == total
    assert len({i["uri"] for i in seen}) == total
    for track in (101, 201):
        own = [i for i in seen if i["track"] == track]
        assert own[0]["start"] == "2026-11-01T10:00:00Z" and own[-1]["end"] == "2026-11-01T10:04:00Z"
        assert all(a["end"] == b["start"] for a, b in zip(own, own[1:], strict=False))
    assert [i["start"] for i in seen] == sorted(i["start"] for i in seen)
    assert {i["codec"] for i in seen} == {"H.264-BP", "H.265"}


def test_search_outside_recordings_says_no_matches(sim, client):
    body = _search_body([101], "2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z")
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/search", content=body)
    assert _tag(r.text, "responseStatusStrg") == "NO MATCHES" and _tag(r.text, "numOfMatches") == "0"


def test_search_accepts_track_list_and_partial_overlap(sim, client):
    body = _search_body([101], "2026-11-01T05:00:03Z", "2026-11-01T05:00:06Z", element="trackList")
    r = client.post(f"{sim.sha}/ISAPI/ContentMgmt/search", content=body)
    items = _items(r.text)
    assert [i["start"] for i in items] == ["2026-11-01T05:00:00Z", "2026-11-01T05:00:05Z"]
    assert _tag(r.text, "responseStatusStrg") == "OK"


def test_bad_search_xml_is_rejected(sim, client):
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/search", content="<CMSearchDescription><oops>")
    assert r.status_code == 400 and "<ResponseStatus" in r.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_download_serves_the_advertised_segment(sim, client, method, tmp_path):
    uri = _first_uri(client, sim.md5, track=201)
    size = int(re.search(r"size=(\d+)", uri).group(1))
    r = client.request(method, f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert int(r.headers["Content-Length"]) == size == len(r.content)
    assert r.content[:4] == b"IMKH"
    path = tmp_path / "segment.mp4"
    path.write_bytes(r.content)
    probe = _ffprobe(path)
    assert [s["codec_name"] for s in probe["streams"] if s["codec_type"] == "video"] == ["hevc"]
    assert abs(float(probe["format"]["duration"]) - SEGMENT_S) <= 1


def test_download_of_unknown_segment_is_404(sim, client):
    uri = "rtsp://127.0.0.1/Streaming/tracks/101/?starttime=20261101T100000Z&endtime=20261101T100005Z&name=99&size=1"
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert r.status_code == 404


def test_unknown_path_is_404_and_wrong_method_405(sim, client):
    r = client.get(f"{sim.md5}/ISAPI/Nothing/here")
    assert r.status_code == 404 and "<ResponseStatus" in r.text and "<statusCode>4</statusCode>" in r.text
    assert client.get(f"{sim.md5}/ISAPI/ContentMgmt/search").status_code == 405
    assert client.post(f"{sim.md5}/ISAPI/System/deviceInfo", content="").status_code == 405


# -- faults -----------------------------------------------------------------------------------


def test_latency_delays_isapi_responses(sim, client):
    control.set_faults(sim.ports[0], latency_ms=400)
    r = client.get(f"{sim.md5}/ISAPI/System/time")
    assert r.status_code == 200 and r.elapsed >= timedelta(milliseconds=400)


def test_bandwidth_caps_download_throughput(sim, client):
    uri = _first_uri(client, sim.md5, track=201)
    size = int(re.search(r"size=(\d+)", uri).group(1))
    bps = size // 2  # about two seconds for the whole segment
    control.set_faults(sim.ports[0], bandwidth_bps=bps)
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert len(r.content) == size
    assert r.elapsed >= timedelta(seconds=1.5)


def test_fail_next_answers_n_requests_with_the_error_status(sim, client):
    control.set_faults(sim.ports[0], fail_next=2, error_status=503)
    codes = [client.get(f"{sim.md5}/ISAPI/System/time").status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_error_rate_fails_every_kth_request(sim, client):
    control.set_faults(sim.ports[0], error_rate=0.25, error_status=500)
    codes = [client.get(f"{sim.md5}/ISAPI/System/time").status_code for _ in range(8)]
    assert codes == [200, 200, 200, 500, 200, 200, 200, 500]


def test_drop_after_bytes_cuts_the_body(sim, client):
    uri = _first_uri(client, sim.md5)
    control.set_faults(sim.ports[0], drop_after_bytes=10_000)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        client.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))


def test_wrong_size_serves_a_short_but_consistent_body(sim, client):
    uri = _first_uri(client, sim.md5)
    size = int(re.search(r"size=(\d+)", uri).group(1))
    control.set_faults(sim.ports[0], wrong_size=True)
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(r.content) < size


def test_offline_closes_without_answer_but_control_still_works(sim, client):
    control.reset_stats(sim.ports[0])
    control.set_faults(sim.ports[0], offline=True)
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        client.get(f"{sim.md5}/ISAPI/System/time")
    assert control.get_faults(sim.ports[0])["offline"] is True
    # The dropped request is counted as such, not as one served.
    stats = control.stats(sim.ports[0])
    assert (stats["offline_by_path"], stats["requests_by_path"]) == ({"/ISAPI/System/time": 1}, {}), stats
    control.reset_faults(sim.ports[0])
    assert client.get(f"{sim.md5}/ISAPI/System/time").status_code == 200
    stats = control.stats(sim.ports[0])  # served: the digest challenge, then the answer
    assert (stats["offline_by_path"], stats["requests_by_path"]) == (
        {"/ISAPI/System/time": 1},
        {"/ISAPI/System/time": 2},
    ), stats


def test_wrong_password_rejects_until_reset(sim, client):
    control.set_faults(sim.ports[0], wrong_password=True)
    assert client.get(f"{sim.md5}/ISAPI/System/deviceInfo").status_code == 401
    control.reset_faults(sim.ports[0])
    assert client.get(f"{sim.md5}/ISAPI/System/deviceInfo").status_code == 200


def _refusal(refused: pytest.ExceptionInfo[urllib.error.HTTPError]) -> str:
    """The simulator's reason for refusing a fault change (the 400 answer's `error`)."""
    return json.loads(refused.value.read())["error"]


def test_unknown_fault_is_refused(sim):
    with pytest.raises(urllib.error.HTTPError, match="HTTP Error 400: Bad Request") as refused:
        control.set_faults(sim.ports[0], no_such_fault=1)
    assert _refusal(refused) == "unknown faults: ['no_such_fault']"


def test_low_privilege_on_downloads_answers_403_with_the_reason(sim, client):
    uri = _first_uri(client, sim.md5)
    control.reset_stats(sim.ports[0])
    control.set_faults(sim.ports[0], low_privilege="download")
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert r.status_code == 403
    assert _tag(r.text, "subStatusCode") == "lowPrivilege"
    assert (_tag(r.text, "statusCode"), _tag(r.text, "statusString")) == ("4", "Invalid Operation")
    assert _tag(r.text, "requestURL") == "/ISAPI/ContentMgmt/download"
    assert client.get(f"{sim.md5}/ISAPI/System/time").status_code == 200  # everything else still served
    assert control.stats(sim.ports[0])["refusals"] == {"lowPrivilege": 1}


def test_low_privilege_for_all_but_device_info(sim, client):
    control.set_faults(sim.ports[0], low_privilege="all_but_device_info")
    assert client.get(f"{sim.md5}/ISAPI/System/deviceInfo").status_code == 200
    r = client.get(f"{sim.md5}/ISAPI/System/time")
    assert r.status_code == 403 and _tag(r.text, "subStatusCode") == "lowPrivilege"
    # Rights are checked only after the login: a wrong password is still a 401.
    control.set_faults(sim.ports[0], wrong_password=True)
    assert client.get(f"{sim.md5}/ISAPI/System/time").status_code == 401


def test_refused_download_forms_leave_the_query_string_get(sim, client):
    uri = _first_uri(client, sim.md5, track=201)
    size = int(re.search(r"size=(\d+)", uri).group(1))
    control.reset_stats(sim.ports[0])
    control.set_faults(sim.ports[0], refuse_download_forms="post_xml, get_xml")
    for method in ("POST", "GET"):
        r = client.request(method, f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
        assert r.status_code == 403 and _tag(r.text, "subStatusCode") == "methodNotAllowed", method
    r = client.get(f"{sim.md5}/ISAPI/ContentMgmt/download", params={"playbackURI": uri})
    assert r.status_code == 200 and len(r.content) == size and r.content[:4] == b"IMKH"
    stats = control.stats(sim.ports[0])
    assert stats["downloads_by_form"] == {"post_xml": 1, "get_xml": 1, "get_query": 1}
    assert stats["refusals"] == {"methodNotAllowed": 2}


def test_download_refusal_status_and_reason_are_chosen(sim, client):
    uri = _first_uri(client, sim.md5)
    control.set_faults(
        sim.ports[0],
        refuse_download_forms="post_xml",
        download_refusal_status=400,
        download_refusal_sub_status="badXmlContent",
    )
    r = client.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert r.status_code == 400
    assert (_tag(r.text, "statusCode"), _tag(r.text, "subStatusCode")) == ("6", "badXmlContent")
    r = client.request("GET", f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
    assert r.status_code == 200


def test_a_firmware_taking_one_body_shape_refuses_the_others(sim, client):
    uri = _first_uri(client, sim.md5)
    control.reset_stats(sim.ports[0])
    control.set_faults(sim.ports[0], download_body="bare")
    url = f"{sim.md5}/ISAPI/ContentMgmt/download"
    hikvision = _download_body(uri).replace("www.isapi.org", "www.hikvision.com")
    for body in (_download_body(uri), hikvision, _download_body(uri).replace("&amp;", "&")):
        r = client.post(url, content=body)
        assert r.status_code == 400 and _tag(r.text, "subStatusCode") == "badXmlContent", body
    bare = f"<downloadRequest><playbackURI>{html.escape(uri)}</playbackURI></downloadRequest>"
    r = client.post(url, content=bare)
    assert r.status_code == 200 and r.content[:4] == b"IMKH"
    assert client.get(url, params={"playbackURI": uri}).status_code == 200  # no body, nothing to refuse
    stats = control.stats(sim.ports[0])
    assert stats["downloads_by_body"] == {"isapi": 1, "hikvision": 1, "other": 1, "bare": 1}
    assert stats["downloads_by_form"] == {"post_xml": 4, "get_query": 1}
    assert stats["refusals"] == {"badXmlContent": 3}


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"low_privilege": "everything"}, "low_privilege must be one of"),
        ({"refuse_download_forms": "post_json"}, "unknown download forms ['post_json']"),
        ({"download_refusal_sub_status": "noSuchReason"}, "download_refusal_sub_status must be one of"),
        ({"download_refusal_status": 200}, "download_refusal_status must be an HTTP error status"),
        ({"download_body": "json"}, "download_body must be one of"),
    ],
)
def test_mistyped_refusal_faults_are_refused(sim, faults, reason):
    with pytest.raises(urllib.error.HTTPError, match="HTTP Error 400: Bad Request") as refused:
        control.set_faults(sim.ports[0], **faults)
    assert _refusal(refused).startswith(reason), _refusal(refused)
    assert control.get_faults(sim.ports[0])["refuse_download_forms"] == ""


def test_stats_count_concurrent_downloads(sim, client):
    uri = _first_uri(client, sim.md5, track=201)
    size = int(re.search(r"size=(\d+)", uri).group(1))
    control.reset_stats(sim.ports[0])
    control.set_faults(sim.ports[0], bandwidth_bps=size)  # each download takes about a second
    barrier = threading.Barrier(3)
    results: list[int] = []

    def fetch() -> None:
        with httpx.Client(auth=httpx.DigestAuth(USER, PASSWORD), timeout=TIMEOUT) as own:
            own.get(f"{sim.md5}/ISAPI/System/time")  # learn the challenge first
            barrier.wait(timeout=30)
            r = own.post(f"{sim.md5}/ISAPI/ContentMgmt/download", content=_download_body(uri))
            results.append(len(r.content))

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [size] * 3
    # The server counts a download as finished just after its last byte went out, which may be
    # a moment after the client has read it: wait for the counter, with a deadline.
    deadline = time.monotonic() + 10
    stats = control.stats(sim.ports[0])
    while stats["downloads_completed"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = control.stats(sim.ports[0])
    assert stats["downloads_completed"] == 3 and stats["active_downloads"] == 0
    assert stats["max_active_downloads"] >= 2
    assert stats["requests_by_path"]["/ISAPI/ContentMgmt/download"] >= 3


# -- process ----------------------------------------------------------------------------------


def test_taken_port_fails_loudly(tmp_path):
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        spec = _spec([holder.getsockname()[1], free_port()])
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(spec))
        proc = subprocess.run(  # noqa: S603 - fixed argument list
            [sys.executable, "-m", "stack.simulator", "--spec", str(path)],
            cwd=PROJECT_ROOT, capture_output=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode != 0
    assert b"already in use" in proc.stderr


def test_sigterm_stops_and_frees_the_ports(tmp_path):
    with (
        running_simulator(tmp_path) as simulator,
        httpx.Client(auth=httpx.DigestAuth(USER, PASSWORD), timeout=TIMEOUT) as c,
    ):
        assert c.get(f"{simulator.md5}/ISAPI/System/time").status_code == 200  # a kept-alive connection
        assert simulator.stop() == 0
        with pytest.raises(httpx.TransportError):
            c.get(f"{simulator.md5}/ISAPI/System/time")
    for port in simulator.ports:
        assert not is_listening(port)
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind((HOST, port))
            again.listen()


def test_a_channel_records_its_sub_stream_as_track_x02(tmp_path):
    from blocks.recorder import MAIN_STREAM, SUB_STREAM, HikvisionRecorder
    from video.probe import probe

    port = free_port()
    spec = _spec([port, free_port()])
    spec["recorders"] = spec["recorders"][:1]
    spec["recorders"][0]["channels"][0]["sub_stream"] = "160x120"
    start = datetime.fromisoformat(LONG_START).replace(tzinfo=parse_posix_tz("CST-8:00:00"))
    end = start + timedelta(seconds=2 * SEGMENT_S)
    block = HikvisionRecorder(host=HOST, port=port, username=USER, password=PASSWORD)
    with control.running(spec, tmp_path), block.connect() as recorder:
        tracks = recorder._call("GET", "/ISAPI/ContentMgmt/record/tracks").decode()
        main = recorder.search(1, start, end, MAIN_STREAM)
        sub = recorder.search(1, start, end, SUB_STREAM)
        none = recorder.search(2, start, end, SUB_STREAM)  # channel 2 records no sub-stream
        files = [recorder.download(rec, tmp_path / "exports").path for rec in (main[0], sub[0])]
    assert {"101", "102", "201"} == set(re.findall(r"<id>(\d+)</id>", tracks))
    assert [(r.start, r.end) for r in sub] == [(r.start, r.end) for r in main] and len(main) == 2
    assert {r.track_id for r in sub} == {102} and {r.track_id for r in main} == {101}
    assert not {r.name for r in sub} & {r.name for r in main}
    assert none == []
    assert [(probe(f).width, probe(f).height) for f in files] == [(320, 240), (160, 120)]


def test_a_misspelt_sub_stream_size_is_refused():
    from stack.simulator.spec import RecorderSpec

    channel = {"id": 1, "scene": "cat", "sub_stream": "160 by 120"}
    with pytest.raises(ValueError, match="channel 1: sub_stream must be WIDTHxHEIGHT"):
        RecorderSpec("r", 1, USER, PASSWORD, LONG_START, LONG_END, [channel])  # type: ignore[list-item]
