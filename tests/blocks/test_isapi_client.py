"""ISAPIClient against a device played by an httpx.MockTransport (tests/isapi_device.py): no socket.

Digest auth, refusals read from the device's words, the download-form fallback, paged
searches in device time and answer bounds are client logic: a fake device shows them as
well as the simulator does, in milliseconds. What only a real socket shows is in
test_recorder_client.py.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from blocks.isapi.client import ANSWER_LIMIT
from blocks.isapi.errors import (
    CorruptDownload,
    DownloadRefused,
    InsufficientPermissions,
    RecorderProtocolError,
    RecorderUnavailable,
    WrongCredentials,
)
from core.errors import is_retryable
from stack.simulator import isapi_xml
from tests.isapi_device import (
    DOWNLOAD,
    MEDIA,
    PASSWORD,
    SEARCH,
    FakeDevice,
    FakeSegment,
    search_page,
    segments_every,
)

SEGMENT_SECONDS = 2
PAGED_SEGMENTS = 45  # more than one 40-match page
EAST_START_LOCAL = datetime(2026, 3, 1, 9, 0, 0)
WEST_START_LOCAL = datetime(2026, 3, 1, 19, 0, 0)
WHOLE_DAYS = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))


def east8(**kwargs) -> FakeDevice:
    """UTC+8, SHA-256 digest, knows only <trackList>, 45 segments: more than a page."""
    return FakeDevice(
        name="nvr-east8", algorithm="SHA-256", timezone="CST-8:00:00", utc_offset=timedelta(hours=8),
        track_element="trackList",
        segments=segments_every(EAST_START_LOCAL, SEGMENT_SECONDS, PAGED_SEGMENTS), **kwargs,
    )  # fmt: skip


def west5(**kwargs) -> FakeDevice:
    """UTC-5, MD5 digest, <trackIDList>, three segments."""
    return FakeDevice(
        name="nvr-west5", timezone="EST5:00:00", utc_offset=timedelta(hours=-5),
        segments=segments_every(WEST_START_LOCAL, SEGMENT_SECONDS, 3), **kwargs,
    )  # fmt: skip


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- device facts and digest auth ----------------------------------------------------------------


def test_device_info_channels_and_clock() -> None:
    device = east8()
    with device.client() as client:
        info = client.device_info()
        assert info["model"] == "DS-7608NI-K2" and info["deviceName"] == "nvr-east8"
        assert client.channels() == [1]
        clock = client.clock()
        assert clock.utc_offset == timedelta(hours=8)
        assert clock.timezone == "CST-8:00:00"
        assert clock.local_time.astimezone(UTC) == datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
        assert client.clock() is clock  # cached per client
    assert device.count("/ISAPI/System/time") == 1


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_challenge_is_answered_once_then_reused(algorithm: str) -> None:
    device = FakeDevice(algorithm=algorithm)
    with device.client() as client:
        client.device_info()
        client.channels()
    # The first request meets the challenge and is asked again with the answer; the next one
    # carries an answer to the cached challenge straight away.
    assert [(seen.path, seen.method) for seen in device.requests] == [
        ("/ISAPI/System/deviceInfo", "GET"),
        ("/ISAPI/System/deviceInfo", "GET"),
        ("/ISAPI/Streaming/channels", "GET"),
    ]


# -- search ----------------------------------------------------------------------------------------


def test_search_pages_past_40_without_gaps_or_duplicates() -> None:
    device = east8()
    with device.client() as client:
        found = client.search(
            1, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
        )
    assert [r.name for r in found] == [s.name for s in device.segments]
    assert len({r.playback_uri for r in found}) == PAGED_SEGMENTS
    # Local 09:00 on a UTC+8 recorder is 01:00 UTC.
    assert found[0].start == datetime(2026, 3, 1, 1, 0, 0, tzinfo=UTC)
    assert found[-1].end == datetime(2026, 3, 1, 1, 0, tzinfo=UTC) + timedelta(
        seconds=SEGMENT_SECONDS * PAGED_SEGMENTS
    )
    assert all(r.channel == 1 and r.track_id == 101 and r.recorder == "nvr-east8" for r in found)
    assert all(r.size == len(MEDIA) for r in found)
    # One <trackIDList> refused by this firmware, then two pages (40 + 5) with <trackList>.
    bodies = [seen.body for seen in device.requests if seen.path == SEARCH]
    assert len(bodies) == 3
    assert b"<trackIDList>" in bodies[0] and all(b"<trackList>" in body for body in bodies[1:])
    assert [b"<searchResultPostion>40<" in body for body in bodies] == [False, False, True]


def test_search_window_is_read_in_device_time() -> None:
    # 01:00:10-01:00:20 UTC is 09:00:10-09:00:20 on the device: segments 5..9 (2 s each).
    device = east8()
    window = (datetime(2026, 3, 1, 1, 0, 10, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, 20, tzinfo=UTC))
    with device.client() as client:
        found = client.search(1, *window)
        before = device.count(SEARCH)
        again = client.search(1, *window)
    assert len(found) == 5
    assert found[0].start == datetime(2026, 3, 1, 1, 0, 10, tzinfo=UTC)
    assert found == again
    assert device.count(SEARCH) - before == 1  # the track-list spelling is settled: one request, one page
    asked = device.requests[-1].body
    assert (
        b"<startTime>2026-03-01T09:00:10Z</startTime>" in asked and b"<endTime>2026-03-01T09:00:20Z<" in asked
    )


def test_search_outside_recordings_is_empty() -> None:
    with west5().client() as client:
        assert client.search(1, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)) == []


def test_search_west_of_greenwich() -> None:
    with west5().client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
    # Local 19:00 on a UTC-5 recorder is 00:00 UTC the next day: the day folder follows UTC.
    assert rec.start == datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def test_search_answering_more_without_matches_is_a_protocol_error() -> None:
    device = west5(search_answer=search_page([], "MORE"))
    with device.client() as client:
        with pytest.raises(RecorderProtocolError, match="MORE with no matches at position 0"):
            client.search(1, *WHOLE_DAYS)


# -- answer bounds and hostile answers ---------------------------------------------------------------


def test_an_xml_bomb_is_refused_unexpanded() -> None:
    device = west5(search_answer=isapi_xml.XML_BOMB)
    with device.client() as client:
        with pytest.raises(RecorderProtocolError, match="forbidden XML construct") as caught:
            client.search(1, *WHOLE_DAYS)
    assert "recorder nvr-west5" in str(caught.value) and not is_retryable(caught.value)


def test_an_answer_beyond_the_limit_is_not_read_further() -> None:
    device = west5(search_answer=b"<CMSearchResult>" + b" " * ANSWER_LIMIT + b"</CMSearchResult>")
    with device.client() as client:
        with pytest.raises(RecorderProtocolError, match=f"larger than {ANSWER_LIMIT // 1024**2} MiB"):
            client.search(1, *WHOLE_DAYS)


def test_a_200_carrying_a_response_status_is_read_as_a_refusal() -> None:
    device = west5(search_answer=isapi_xml.refusal(SEARCH, "notSupport"))
    with device.client() as client:
        with pytest.raises(
            RecorderProtocolError, match=r"refused: notSupport \(Invalid Operation\)"
        ) as caught:
            client.search(1, *WHOLE_DAYS)
    assert caught.value.device_status == "notSupport"


# -- download --------------------------------------------------------------------------------------


def test_download_then_reuse(tmp_path: Path) -> None:
    device = west5()
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        result = client.download(rec, tmp_path)
        assert not result.reused
        assert result.path == tmp_path.resolve() / "nvr-west5" / "1" / "2026-03-02" / f"{rec.name}.ps"
        assert result.bytes == rec.size == len(MEDIA)
        assert result.path.read_bytes() == MEDIA
        again = client.download(rec, tmp_path)
    assert again.reused and again.path == result.path and again.bytes == rec.size
    assert files_under(tmp_path) == [result.path]
    assert device.count(DOWNLOAD) == 1
    # The ISAPI manual's form goes first, the playbackURI's & escaped as XML wants them.
    assert device.download_forms() == ["post_isapi"]
    (body,) = [seen.body for seen in device.requests if seen.path == DOWNLOAD]
    assert b'<downloadRequest version="1.0" xmlns="http://www.isapi.org/ver20/XMLSchema">' in body
    assert b"&amp;endtime=" in body and b"Z&endtime" not in body


def test_download_replaces_a_damaged_copy(tmp_path: Path) -> None:
    device = west5()
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        path = client.download(rec, tmp_path).path
        path.write_bytes(b"IMKH" + b"\0" * 10)  # truncated by an earlier crash, say
        result = client.download(rec, tmp_path)
    assert not result.reused and path.read_bytes() == MEDIA
    assert device.count(DOWNLOAD) == 2


@pytest.mark.parametrize(
    ("fault", "expected", "words"),
    [
        ({"break_downloads_after": 500}, RecorderUnavailable, "connection lost"),
        ({"wrong_size": True}, CorruptDownload, f"device announces {len(MEDIA) - 1024} bytes"),
        ({"truncate_downloads_at": 500}, CorruptDownload, f"received 500 of {len(MEDIA)} bytes"),
    ],
)
def test_broken_downloads_leave_no_file(tmp_path: Path, fault: dict, expected: type, words: str) -> None:
    device = west5()
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        for key, value in fault.items():
            setattr(device, key, value)
        with pytest.raises(expected, match=words) as caught:
            client.download(rec, tmp_path)
    assert is_retryable(caught.value)
    assert caught.value.segment == rec.name and caught.value.channel == 1
    assert files_under(tmp_path) == []
    assert device.count(DOWNLOAD) == 1


def test_a_hostile_segment_name_stays_inside_data_dir(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 8, 0)
    device = FakeDevice(
        name="nvr-old", timezone="CST-5:30:00", utc_offset=timedelta(hours=5, minutes=30),
        segments=[FakeSegment("../../etc/passwd", start, start + timedelta(minutes=1))],
    )  # fmt: skip
    with device.client() as client:
        (hostile,) = client.search(1, *WHOLE_DAYS)
        downloaded = client.download(hostile, tmp_path)
    assert downloaded.path == tmp_path.resolve() / "nvr-old" / "1" / "2026-03-01" / "_.._etc_passwd.ps"
    assert downloaded.path.read_bytes() == MEDIA
    assert not list(tmp_path.rglob("*.part"))


# -- credentials -----------------------------------------------------------------------------------


def test_wrong_password_fails_at_once() -> None:
    device = west5()
    with device.client(password="not-the-password") as client:
        with pytest.raises(WrongCredentials) as caught:
            client.device_info()
    assert "wrong credentials for recorder nvr-west5 (user 'admin'): Unauthorized" in str(caught.value)
    assert caught.value.status_code == 401
    assert not is_retryable(caught.value)
    # One challenge, one answer refused: DigestAuth does not try again, nor does the client.
    assert device.count("/ISAPI/System/deviceInfo") == 2


def test_wrong_password_on_download_tries_no_other_form(tmp_path: Path) -> None:
    device = west5()
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        device.wrong_password = True
        with pytest.raises(WrongCredentials) as caught:
            client.download(rec, tmp_path)
    assert not is_retryable(caught.value)
    assert PASSWORD not in str(caught.value)
    # The cached challenge's answer, refused with a fresh challenge, that one answered and refused.
    assert device.download_forms() == ["post_isapi", "post_isapi"]
    assert files_under(tmp_path) == []


def test_wrong_password_on_the_clock() -> None:
    device = east8(wrong_password=True)
    with device.client() as client:
        with pytest.raises(WrongCredentials) as caught:
            client.clock()
    assert PASSWORD not in str(caught.value)
    assert device.count("/ISAPI/System/time") == 2


def test_a_401_without_a_digest_challenge_is_not_wrong_credentials() -> None:
    # This firmware has digest switched off: it offers Basic only.
    device = FakeDevice(name="nvr-old", no_digest_challenge='Basic realm="DS-7104HGHI"')
    with device.client() as client:
        with pytest.raises(RecorderProtocolError, match="without a digest challenge") as caught:
            client.device_info()
    assert not isinstance(caught.value, WrongCredentials)
    assert 'Basic realm="DS-7104HGHI"' in str(caught.value)
    assert not is_retryable(caught.value)
    assert len(device.requests) == 1  # nothing httpx could answer, so nothing answered


def test_a_401_with_no_challenge_at_all_says_none_was_offered() -> None:
    device = FakeDevice(no_digest_challenge="")
    with device.client() as client:
        with pytest.raises(RecorderProtocolError, match=r"WWW-Authenticate: none"):
            client.device_info()
    assert len(device.requests) == 1


# -- permissions and download forms: refusals read from the device's words ------------------------------


def test_low_privilege_download_names_the_user_and_is_asked_once(tmp_path: Path) -> None:
    device = west5(username="viewer")
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]  # searching is allowed; downloading is not
        device.refusals[DOWNLOAD] = (403, "lowPrivilege")
        with pytest.raises(InsufficientPermissions) as caught:
            client.download(rec, tmp_path)
    error = caught.value
    assert str(error).startswith(
        "user 'viewer' lacks the rights for POST /ISAPI/ContentMgmt/download on recorder nvr-west5: "
        "lowPrivilege (Invalid Operation)"
    )
    assert PASSWORD not in str(error)
    assert (error.username, error.status_code, error.device_status) == ("viewer", 403, "lowPrivilege")
    assert (error.channel, error.segment) == (1, rec.name)
    assert not is_retryable(error)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    # Exactly one request, refused once: no fallback form, no retry inside the client.
    assert device.count(DOWNLOAD) == 1
    assert files_under(tmp_path) == []


def test_low_privilege_for_everything_but_device_info() -> None:
    device = west5(username="viewer", refusals={"/ISAPI/System/time": (403, "lowPrivilege")})
    with device.client() as client:
        assert client.device_info()["deviceName"] == "nvr-west5"
        with pytest.raises(
            InsufficientPermissions, match="user 'viewer' lacks the rights for GET /ISAPI/System/time"
        ):
            client.search(1, *WHOLE_DAYS)
    assert device.count("/ISAPI/System/time") == 1 and device.count(SEARCH) == 0


METHOD_REFUSED = (403, "methodNotAllowed")
NOT_SUPPORTED = (403, "notSupport")
BODY_REFUSED = (400, "badXmlContent")
# Every form in the order tried: each body by POST, then by GET, then the query string.
EVERY_FORM = [
    "post_isapi",
    "post_bare",
    "post_hikvision",
    "get_isapi",
    "get_bare",
    "get_hikvision",
    "get_query",
]


@pytest.mark.parametrize(
    ("refusals", "body", "expected_forms"),
    [
        # POST refused for its method: the same body by GET, POST's other bodies left alone.
        ({"post_xml": METHOD_REFUSED}, "", ["post_isapi", "get_isapi"]),
        ({"post_xml": (405, "methodNotAllowed")}, "", ["post_isapi", "get_isapi"]),
        ({"post_xml": (405, "")}, "", ["post_isapi", "get_isapi"]),
        # Only the query-string GET accepted.
        ({"post_xml": NOT_SUPPORTED, "get_xml": NOT_SUPPORTED}, "", ["post_isapi", "get_isapi", "get_query"]),
        # A refusal of the body: every body by POST, then by GET, then the query.
        ({"post_xml": BODY_REFUSED, "get_xml": BODY_REFUSED}, "", EVERY_FORM),
        # Firmware taking one body shape: the next body on the same request line.
        ({}, "bare", ["post_isapi", "post_bare"]),
        ({}, "hikvision", ["post_isapi", "post_bare", "post_hikvision"]),
        # Both at once: GET only, and only the hikvision.com body.
        ({"post_xml": METHOD_REFUSED}, "hikvision", ["post_isapi", "get_isapi", "get_bare", "get_hikvision"]),
    ],
)
def test_refused_download_form_falls_back_and_is_remembered(
    tmp_path: Path, refusals: dict[str, tuple[int, str]], body: str, expected_forms: list[str]
) -> None:
    device = west5(download_refusals=refusals, download_body=body)
    with device.client() as client:
        first, second = client.search(1, *WHOLE_DAYS)[:2]
        results = [client.download(first, tmp_path), client.download(second, tmp_path)]
    for rec, result in zip((first, second), results, strict=True):
        assert not result.reused and result.bytes == rec.size == result.path.stat().st_size
        assert result.path.read_bytes() == MEDIA
    # Refused forms were asked once, for the first segment; the second went straight to the one that worked.
    assert device.download_forms() == [*expected_forms, expected_forms[-1]]


def test_every_download_form_refused_names_forms_and_device_words(tmp_path: Path) -> None:
    device = west5(download_refusals=dict.fromkeys(("post_xml", "get_xml", "get_query"), NOT_SUPPORTED))
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        with pytest.raises(DownloadRefused) as caught:
            client.download(rec, tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, RecorderProtocolError)
    forms = ("POST with isapi.org XML body", "GET with isapi.org XML body", "GET with playbackURI query")
    lines = [f"{form}: HTTP 403 notSupport (Invalid Operation)" for form in forms]
    assert (
        message
        == f"recorder nvr-west5 refused every download form tried: {'; '.join(lines)} (channel 1, segment {rec.name})"
    )
    assert caught.value.refusals == lines
    assert (caught.value.channel, caught.value.segment) == (1, rec.name)
    assert (caught.value.status_code, caught.value.device_status) == (403, "notSupport")
    assert not is_retryable(caught.value)
    # A method refusal is not asked again with another body: one request per request line.
    assert device.download_forms() == ["post_isapi", "get_isapi", "get_query"]
    assert files_under(tmp_path) == []


def test_every_body_refused_names_each_body_tried(tmp_path: Path) -> None:
    device = west5(download_refusals=dict.fromkeys(("post_xml", "get_xml", "get_query"), BODY_REFUSED))
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        with pytest.raises(DownloadRefused) as caught:
            client.download(rec, tmp_path)
    assert [line.split(":")[0] for line in caught.value.refusals] == [
        "POST with isapi.org XML body", "POST with bare XML body", "POST with hikvision.com XML body",
        "GET with isapi.org XML body", "GET with bare XML body", "GET with hikvision.com XML body",
        "GET with playbackURI query",
    ]  # fmt: skip
    assert device.download_forms() == EVERY_FORM


def test_a_server_error_on_download_is_not_taken_for_a_form_refusal(tmp_path: Path) -> None:
    device = west5()
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        device.fail_next.append((503, "deviceBusy"))
        with pytest.raises(
            RecorderUnavailable, match="HTTP 503 for POST /ISAPI/ContentMgmt/download"
        ) as caught:
            client.download(rec, tmp_path)
    assert "deviceBusy (Device Error)" in str(caught.value)
    assert is_retryable(caught.value)
    assert device.count(DOWNLOAD) == 1  # retrying a 5xx is the task's job, not a reason to change form


def test_a_missing_recording_is_not_taken_for_a_form_refusal(tmp_path: Path) -> None:
    device = west5()
    with device.client() as client:
        rec = client.search(1, *WHOLE_DAYS)[0]
        gone = replace(rec, playback_uri=rec.playback_uri.replace("name=", "name=gone"))
        with pytest.raises(RecorderProtocolError, match=r"HTTP 404 for POST .* noRecord") as caught:
            client.download(gone, tmp_path)
    assert not isinstance(caught.value, DownloadRefused)
    assert device.count(DOWNLOAD) == 1


def test_server_error_is_unavailable() -> None:
    device = west5(fail_next=[(503, "deviceBusy")])
    with device.client() as client:
        with pytest.raises(RecorderUnavailable, match="HTTP 503") as caught:
            client.device_info()
    assert is_retryable(caught.value)
    assert "recorder nvr-west5" in str(caught.value)


# -- an older firmware: <trackList> only, POST refused, overlapping reversed pages --------------------


def test_old_firmware_fallbacks_are_found_and_remembered(tmp_path: Path) -> None:
    start = datetime(2026, 3, 1, 8, 0)
    device = FakeDevice(
        name="nvr-old", timezone="CST-5:30:00", utc_offset=timedelta(hours=5, minutes=30),
        track_element="trackList", page_overlap=1, reverse_pages=True,
        segments=[
            FakeSegment(f"0000000{i:03d}", start + timedelta(minutes=i), start + timedelta(minutes=i + 1))
            for i in range(85)
        ],
        download_refusals={"post_xml": (405, "")},
    )  # fmt: skip
    with device.client() as client:
        found = client.search(1, *WHOLE_DAYS)
        searches_first = device.count(SEARCH)
        client.search(1, *WHOLE_DAYS)
        searches_second = device.count(SEARCH) - searches_first
        client.download(found[0], tmp_path)
        client.download(found[1], tmp_path)
    # Every segment once, in time order, despite repeated and reversed pages; 08:00 at UTC+5:30 is 02:30 UTC.
    assert len(found) == 85 == len({r.playback_uri for r in found})
    assert [r.start for r in found] == sorted(r.start for r in found)
    assert found[0].start == datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    # 1 refused trackIDList + 3 pages, then 3 pages with trackList straight away.
    assert (searches_first, searches_second) == (4, 3)
    # POST refused once (a bare 405: the method), GET used for the rest.
    assert device.download_forms() == ["post_isapi", "get_isapi", "get_isapi"]
