"""ISAPI parsing on stored device answers: namespaces, paging status, times, zones, hostile names."""

from __future__ import annotations

import fcntl
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from blocks.isapi.clock import (
    DeviceClock,
    TimeZoneFormatError,
    device_clock,
    device_time_to_utc,
    parse_timezone,
    utc_to_device_text,
)
from blocks.isapi.download import BadMagic, DownloadBusy, WrongSize, is_complete, write_verified
from blocks.isapi.download_forms import DOWNLOAD_FORMS, HIKVISION_NAMESPACE, ISAPI_NAMESPACE
from blocks.isapi.errors import (
    CorruptDownload,
    DownloadRefused,
    InsufficientPermissions,
    RecorderError,
    RecorderProtocolError,
    RecorderUnavailable,
    WrongCredentials,
)
from blocks.isapi.naming import UnsafeNameError, segment_path
from blocks.isapi.parsing import (
    XmlFormatError,
    download_request,
    parse_channels,
    parse_clock,
    parse_device_info,
    parse_response_status,
    parse_search_page,
    parse_user_check,
    parse_xml,
    search_request,
)
from blocks.isapi.refusals import Refusal, classify, read_refusal, refuses_body
from blocks.recorder import HikvisionRecorder
from core.errors import ServiceError, is_retryable

SAMPLES = Path(__file__).parent / "isapi_samples"
UTC8 = DeviceClock(
    datetime(2024, 3, 5, 17, 0, tzinfo=timezone(timedelta(hours=8))), timedelta(hours=8), "CST-8:00:00"
)
UTC0 = DeviceClock(datetime(2024, 3, 5, 9, 0, tzinfo=UTC), timedelta(0), "GMT0:00:00")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# -- search answers ----------------------------------------------------------------------------


def test_single_match_isapi_namespace_bogus_z_is_device_local() -> None:
    page = parse_search_page(sample("search_isapi_one.xml"), "nvr-a", UTC8)
    assert page.status == "OK"
    assert len(page.recordings) == 1
    rec = page.recordings[0]
    assert (rec.recorder, rec.channel, rec.track_id) == ("nvr-a", 1, 101)
    # 09:12:40 "Z" on a UTC+8 recorder is 01:12:40 UTC.
    assert rec.start == datetime(2024, 3, 5, 1, 12, 40, tzinfo=UTC)
    assert rec.end == datetime(2024, 3, 5, 1, 27, 55, tzinfo=UTC)
    assert rec.start.tzinfo is not None and rec.start.utcoffset() == timedelta(0)
    assert rec.name == "00000002153000312"
    assert rec.size == 268435456
    assert rec.codec == "H.264-BP"
    # The line break inside the URI is gone, the &amp; are plain &.
    assert rec.playback_uri.startswith(
        "rtsp://192.0.2.10/Streaming/tracks/101/?starttime=20240305T091240Z&endtime="
    )
    assert "\n" not in rec.playback_uri and " " not in rec.playback_uri


def test_many_matches_hikvision_ver20_more() -> None:
    page = parse_search_page(sample("search_hikvision_v20_more.xml"), "nvr-b", UTC0)
    assert page.status == "MORE"
    assert [r.name for r in page.recordings] == [
        "ch02_00000000001000100",
        "ch02_00000000001000200",
        "ch02_00000000001000300",
    ]
    assert {r.channel for r in page.recordings} == {2}
    assert page.recordings[0].start == datetime(2024, 3, 5, 0, 0, tzinfo=UTC)
    assert page.recordings[2].size == 301989888
    assert page.recordings[1].codec == "H.265"


def test_ver10_namespace_and_missing_codec() -> None:
    est = device_clock("2019-11-30T20:00:00Z", "EST5:00:00")
    page = parse_search_page(sample("search_hikvision_v10.xml"), "nvr-c", est)
    first, second = page.recordings
    assert first.codec is None and second.codec == "H.264"
    # 22:45:10 local EST is 03:45:10 UTC the next day: the UTC date is what names the folder.
    assert first.start == datetime(2019, 12, 1, 3, 45, 10, tzinfo=UTC)
    assert second.end == datetime(2019, 12, 1, 5, 12, 31, tzinfo=UTC)


def test_psia_namespace() -> None:
    page = parse_search_page(sample("search_psia.xml"), "nvr-d", UTC0)
    assert [(r.channel, r.track_id) for r in page.recordings] == [(3, 301), (3, 301)]
    assert page.recordings[1].name == "ch03_08000000000000215"


def test_no_namespace_real_offsets_are_honoured() -> None:
    # The clock says UTC+8, but these items carry real offsets, which win.
    page = parse_search_page(sample("search_nonamespace_offsets.xml"), "nvr-e", UTC8)
    first, second = page.recordings
    assert first.start == datetime(2025, 1, 10, 2, 30, tzinfo=UTC)
    assert second.start == datetime(2025, 1, 10, 11, 15, tzinfo=UTC)
    # No name= in the URI: the <name> element is used.
    assert second.name == "00000001001000002"
    assert first.codec == "H.265+"


def test_no_matches_is_empty() -> None:
    page = parse_search_page(sample("search_no_matches.xml"), "nvr-f", UTC0)
    assert page.status == "NO MATCHES"
    assert page.recordings == []


def test_hostile_segment_names_are_sanitised() -> None:
    page = parse_search_page(sample("search_hostile_names.xml"), "nvr-g", UTC0)
    names = [r.name for r in page.recordings]
    assert names[0] == "_.._etc_passwd"
    assert names[1] == "_etc_shadow"
    assert names[2] == "seg_ment.ps"
    assert names[3] == "ch01_20240101T000300Z"  # ".." leaves nothing usable
    for name in names:
        assert "/" not in name and "\x00" not in name and not name.startswith(".")


def test_entity_expansion_is_refused() -> None:
    with pytest.raises(XmlFormatError, match="forbidden"):
        parse_search_page(sample("search_entity_expansion.xml"), "nvr-h", UTC0)


@pytest.mark.parametrize(
    "body",
    [b"<CMSearchResult><responseStatusStrg>OK</responseStatusStrg", b"not xml", b"<DeviceInfo/>"],
)
def test_broken_or_wrong_answers_are_format_errors(body: bytes) -> None:
    with pytest.raises(XmlFormatError):
        parse_search_page(body, "nvr-i", UTC0)


def test_item_without_playback_uri_is_a_format_error() -> None:
    body = (
        b"<CMSearchResult><responseStatusStrg>OK</responseStatusStrg><matchList><searchMatchItem>"
        b"<trackID>101</trackID><timeSpan><startTime>2024-01-01T00:00:00Z</startTime>"
        b"<endTime>2024-01-01T00:01:00Z</endTime></timeSpan></searchMatchItem></matchList></CMSearchResult>"
    )
    with pytest.raises(XmlFormatError, match="playbackURI"):
        parse_search_page(body, "nvr-j", UTC0)


# -- other answers -----------------------------------------------------------------------------


def test_device_info_and_channels() -> None:
    info = parse_device_info(sample("device_info.xml"))
    assert info["model"] == "DS-7608NI-K2"
    assert info["firmwareVersion"] == "V4.61.025"
    assert parse_channels(sample("streaming_channels.xml")) == [1, 2, 16]


def test_response_status() -> None:
    status = parse_response_status(sample("response_status_bad_xml.xml"))
    assert status is not None
    assert status.sub_status_code == "badXmlContent"
    assert status.describe() == "badXmlContent (Invalid XML Content)"
    assert parse_response_status(sample("device_info.xml")) is None


# -- refusals: what a non-2xx answer means, read from the device's words --------------------------


@pytest.mark.parametrize(
    ("name", "http_status", "kind", "words"),
    [
        (
            "response_status_403_low_privilege.xml",
            403,
            Refusal.LOW_PRIVILEGE,
            "lowPrivilege (Invalid Operation)",
        ),
        (
            "response_status_403_method_not_allowed.xml",
            403,
            Refusal.REQUEST_FORM,
            "methodNotAllowed (Invalid Operation)",
        ),
        ("response_status_403_not_support.xml", 403, Refusal.REQUEST_FORM, "notSupport (Invalid Operation)"),
        (
            "response_status_400_bad_xml_content.xml",
            400,
            Refusal.REQUEST_FORM,
            "badXmlContent (Invalid XML Content)",
        ),
        (
            "response_status_401_bad_authorization.xml",
            401,
            Refusal.WRONG_CREDENTIALS,
            "badAuthorization (Invalid Operation)",
        ),
        (
            "user_check_401_attempts_left.xml",
            401,
            Refusal.WRONG_CREDENTIALS,
            "Unauthorized, 4 login attempts left",
        ),
        (
            "user_check_401_locked.xml",
            401,
            Refusal.WRONG_CREDENTIALS,
            "Unauthorized, account locked for 1800 s",
        ),
    ],
)
def test_stored_refusals_are_read_in_the_devices_words(
    name: str, http_status: int, kind: Refusal, words: str
) -> None:
    refusal = read_refusal(http_status, sample(name), challenge_answered=True)
    assert refusal.kind is kind
    assert refusal.words == words
    assert refusal.summary() == f"HTTP {http_status} {words}"


def test_a_403_bad_authorization_is_wrong_credentials_not_a_form_refusal() -> None:
    # Some firmware answers a refused login with 403 and an auth sub status instead of a 401.
    refusal = read_refusal(403, sample("response_status_401_bad_authorization.xml"), challenge_answered=False)
    assert refusal.kind is Refusal.WRONG_CREDENTIALS
    assert refusal.sub_status == "badAuthorization"


def test_a_401_is_wrong_credentials_only_after_an_answered_digest_challenge() -> None:
    body = sample("user_check_401_attempts_left.xml")
    assert read_refusal(401, body, challenge_answered=True).kind is Refusal.WRONG_CREDENTIALS
    assert read_refusal(401, body, challenge_answered=False).kind is Refusal.NO_DIGEST_CHALLENGE


def test_user_check_is_not_a_response_status() -> None:
    check = parse_user_check(sample("user_check_401_locked.xml"))
    assert check is not None and check.lock_status == "lock" and check.unlock_time == "1800"
    assert parse_response_status(sample("user_check_401_locked.xml")) is None
    assert parse_user_check(sample("response_status_403_low_privilege.xml")) is None


@pytest.mark.parametrize(
    ("http_status", "sub_status", "kind"),
    [
        (405, "", Refusal.REQUEST_FORM),  # HTTP's own "not this method"
        (501, "", Refusal.REQUEST_FORM),
        (400, "", Refusal.REQUEST_FORM),  # old firmware: a bare 400/404 for a POST it does not know
        (404, "", Refusal.REQUEST_FORM),
        (404, "noRecord", Refusal.OTHER),  # the form was fine, the recording is not there
        (403, "", Refusal.OTHER),  # forbidden without a reason: no guessing at another form
        (403, "someFutureCode", Refusal.OTHER),
        (403, "noPrivilege", Refusal.LOW_PRIVILEGE),
        (400, "badParameters", Refusal.REQUEST_FORM),
        (503, "deviceBusy", Refusal.UNAVAILABLE),
        (500, "", Refusal.UNAVAILABLE),
    ],
)
def test_refusal_classification(http_status: int, sub_status: str, kind: Refusal) -> None:
    assert classify(http_status, sub_status, challenge_answered=True) is kind


def test_answers_without_device_words_say_so() -> None:
    refusal = read_refusal(405, b"", challenge_answered=False)
    assert (refusal.words, refusal.sub_status) == ("", "")
    assert refusal.summary() == "HTTP 405 (no explanation)"


# -- requests ----------------------------------------------------------------------------------


def test_search_request_shape() -> None:
    body = search_request("ID-1", 201, "2024-03-05T09:00:00Z", "2024-03-05T10:00:00Z", 40, "trackList")
    root = parse_xml(body)
    texts = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root.iter()}
    assert texts["searchResultPostion"] == "40"
    assert texts["maxResults"] == "40"
    assert texts["trackID"] == "201"
    assert "trackList" in texts and "trackIDList" not in texts
    assert texts["startTime"] == "2024-03-05T09:00:00Z"


@pytest.mark.parametrize("namespace", ["", ISAPI_NAMESPACE, HIKVISION_NAMESPACE])
def test_download_request_escapes_ampersands_in_every_body_shape(namespace: str) -> None:
    uri = "rtsp://h/Streaming/tracks/101/?starttime=1&endtime=2&name=x&size=3"
    body = download_request(uri, namespace)
    assert b"&amp;endtime" in body and b"&endtime" not in body
    root = parse_xml(body)
    assert root.tag == (f"{{{namespace}}}downloadRequest" if namespace else "downloadRequest")
    assert root.get("version") == ("1.0" if namespace else None)
    assert [child.text for child in root] == [uri]


def test_download_forms_in_the_order_devices_most_often_take_them() -> None:
    assert [form.label for form in DOWNLOAD_FORMS] == [
        "POST with isapi.org XML body",
        "POST with bare XML body",
        "POST with hikvision.com XML body",
        "GET with isapi.org XML body",
        "GET with bare XML body",
        "GET with hikvision.com XML body",
        "GET with playbackURI query",
    ]
    query = DOWNLOAD_FORMS[-1].request_options("rtsp://h/?a=1&b=2")
    assert query == {"params": {"playbackURI": "rtsp://h/?a=1&b=2"}}


@pytest.mark.parametrize(
    ("http_status", "body", "about_body"),
    [
        (400, "response_status_400_bad_xml_content.xml", True),
        (403, "response_status_403_method_not_allowed.xml", False),
        (403, "response_status_403_not_support.xml", False),
        (400, None, True),  # a bare 400 says nothing either way: the other bodies get their turn
        (405, None, False),
        (404, None, False),
    ],
)
def test_a_form_refusal_is_about_the_body_or_the_method(
    http_status: int, body: str | None, about_body: bool
) -> None:
    refusal = read_refusal(http_status, sample(body) if body else b"", challenge_answered=True)
    assert refusal.kind is Refusal.REQUEST_FORM
    assert refuses_body(refusal) is about_body


# -- time zones and device times ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        ("CST-8:00:00", timedelta(hours=8)),
        ("EST5:00:00", timedelta(hours=-5)),
        ("CST-5:30:00", timedelta(hours=5, minutes=30)),
        ("CST+3:30:00", timedelta(hours=-3, minutes=-30)),
        ("CST-5:45:00", timedelta(hours=5, minutes=45)),
        ("GMT0:00:00", timedelta(0)),
        ("UTC+05:30", timedelta(hours=5, minutes=30)),
        ("GMT-03:00", timedelta(hours=-3)),
        ("UTC", timedelta(0)),
        ("<+0330>-3:30", timedelta(hours=3, minutes=30)),
    ],
)
def test_timezone_strings(raw: str, offset: timedelta) -> None:
    assert parse_timezone(raw).utcoffset(datetime(2024, 1, 15, 12, 0)) == offset


@pytest.mark.parametrize("raw", ["", "+8", "CST-99:00:00", "Europe/Paris x"])
def test_unparseable_timezones(raw: str) -> None:
    with pytest.raises(TimeZoneFormatError):
        parse_timezone(raw)


def test_hikvision_dst_rule_is_a_forward_shift() -> None:
    cet = parse_timezone("CST-1:00:00DST01:00:00,M3.5.0/02:00:00,M10.5.0/03:00:00")
    assert cet.utcoffset(datetime(2024, 1, 15, 12, 0)) == timedelta(hours=1)
    assert cet.utcoffset(datetime(2024, 7, 15, 12, 0)) == timedelta(hours=2)
    # 2024-03-31 is the last Sunday of March: 01:59 is winter, 03:00 summer.
    assert cet.utcoffset(datetime(2024, 3, 31, 1, 59)) == timedelta(hours=1)
    assert cet.utcoffset(datetime(2024, 3, 31, 3, 0)) == timedelta(hours=2)
    # The repeated hour on 2024-10-27: fold 0 is summer time, fold 1 winter time.
    assert cet.utcoffset(datetime(2024, 10, 27, 2, 30)) == timedelta(hours=2)
    assert cet.utcoffset(datetime(2024, 10, 27, 2, 30, fold=1)) == timedelta(hours=1)
    # UTC -> local round trip through the autumn change.
    before = datetime(2024, 10, 27, 0, 30, tzinfo=UTC).astimezone(cet)
    after = datetime(2024, 10, 27, 1, 30, tzinfo=UTC).astimezone(cet)
    assert before.replace(tzinfo=None) == after.replace(tzinfo=None) == datetime(2024, 10, 27, 2, 30)
    assert before.astimezone(UTC).hour == 0 and after.astimezone(UTC).hour == 1


def test_southern_hemisphere_dst() -> None:
    # Chile-like: UTC-4, summer from the first Saturday of September to the first Saturday of April.
    chile = parse_timezone("CST+4:00:00DST01:00:00,M9.1.6/24:00:00,M4.1.6/24:00:00")
    assert chile.utcoffset(datetime(2024, 1, 10, 12, 0)) == timedelta(hours=-3)
    assert chile.utcoffset(datetime(2024, 6, 10, 12, 0)) == timedelta(hours=-4)


def test_posix_dst_offset_is_absolute() -> None:
    cet = parse_timezone("CET-1CEST-2,M3.5.0,M10.5.0/3")
    assert cet.utcoffset(datetime(2024, 7, 1, 12, 0)) == timedelta(hours=2)
    assert cet.utcoffset(datetime(2024, 12, 1, 12, 0)) == timedelta(hours=1)


def test_clock_with_real_offset() -> None:
    clock = parse_clock(sample("time_isapi_offset.xml"))
    assert clock.utc_offset == timedelta(hours=8)
    assert clock.timezone == "CST-8:00:00"
    assert clock.local_time == datetime(2024, 3, 5, 9, 12, 40, tzinfo=UTC)


def test_clock_with_bogus_z_uses_timezone_string() -> None:
    clock = parse_clock(sample("time_hikvision_z.xml"))
    assert clock.utc_offset == timedelta(hours=-5)
    assert clock.local_time.replace(tzinfo=None) == datetime(2024, 3, 5, 4, 12, 40)
    assert clock.local_time.astimezone(UTC) == datetime(2024, 3, 5, 9, 12, 40, tzinfo=UTC)


def test_clock_display_zone_form() -> None:
    clock = parse_clock(sample("time_india_display.xml"))
    assert clock.utc_offset == timedelta(hours=5, minutes=30)
    assert clock.local_time.astimezone(UTC) == datetime(2024, 3, 5, 9, 12, 40, tzinfo=UTC)


def test_clock_in_summer_converts_winter_segments_with_winter_offset() -> None:
    clock = parse_clock(sample("time_cet_dst.xml"))
    assert clock.utc_offset == timedelta(hours=2)
    assert device_time_to_utc("2024-01-10T12:00:00Z", clock) == datetime(2024, 1, 10, 11, 0, tzinfo=UTC)
    assert device_time_to_utc("2024-07-10T12:00:00Z", clock) == datetime(2024, 7, 10, 10, 0, tzinfo=UTC)
    assert utc_to_device_text(datetime(2024, 1, 10, 11, 0, tzinfo=UTC), clock) == "2024-01-10T12:00:00Z"


def test_clock_contradicting_its_zone_string_trusts_local_time_offset() -> None:
    clock = device_clock("2024-03-05T17:12:40+07:00", "CST-8:00:00")
    assert device_time_to_utc("2024-03-05T17:00:00Z", clock) == datetime(2024, 3, 5, 10, 0, tzinfo=UTC)


def test_requests_are_written_in_device_local_time_with_z() -> None:
    assert utc_to_device_text(datetime(2024, 3, 5, 1, 0, tzinfo=UTC), UTC8) == "2024-03-05T09:00:00Z"
    with pytest.raises(ValueError, match="naive datetime given; pass an aware UTC datetime"):
        utc_to_device_text(datetime(2024, 3, 5, 1, 0), UTC8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05T09:00:00Z", datetime(2024, 3, 5, 1, 0, tzinfo=UTC)),
        ("2024-03-05T09:00:00", datetime(2024, 3, 5, 1, 0, tzinfo=UTC)),
        ("2024-03-05T09:00:00.000Z", datetime(2024, 3, 5, 1, 0, tzinfo=UTC)),
        ("2024-03-05T09:00:00+01:00", datetime(2024, 3, 5, 8, 0, tzinfo=UTC)),
        ("2024-03-05T09:00:00-0330", datetime(2024, 3, 5, 12, 30, tzinfo=UTC)),
    ],
)
def test_device_times(text: str, expected: datetime) -> None:
    assert device_time_to_utc(text, UTC8) == expected


# -- names and paths ---------------------------------------------------------------------------


def test_segment_path_stays_inside_data_dir(tmp_path: Path) -> None:
    start = datetime(2024, 3, 5, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    path = segment_path(tmp_path, "../../nvr 1", 2, start, "../../etc/passwd")
    assert path == tmp_path.resolve() / "_.._nvr_1" / "2" / "2024-03-06" / "_.._etc_passwd.ps"
    assert path.is_relative_to(tmp_path.resolve())


def test_segment_path_refuses_a_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "nvr").symlink_to(outside)
    with pytest.raises(UnsafeNameError):
        segment_path(data, "nvr", 1, datetime(2024, 1, 1, tzinfo=UTC), "seg")


# -- streaming to disk -------------------------------------------------------------------------

PAYLOAD = b"IMKH" + bytes(36) + b"\x00\x00\x01\xba" + b"x" * 100


def test_write_verified_and_reuse(tmp_path: Path) -> None:
    final = tmp_path / "a" / "seg.ps"
    result = write_verified(iter([PAYLOAD[:3], PAYLOAD[3:50], PAYLOAD[50:]]), final, len(PAYLOAD))
    assert (result.path, result.bytes, result.reused) == (final, len(PAYLOAD), False)
    assert final.read_bytes() == PAYLOAD
    assert is_complete(final, len(PAYLOAD))
    assert not is_complete(final, len(PAYLOAD) + 1)
    assert list(final.parent.iterdir()) == [final]


@pytest.mark.parametrize(
    ("chunks", "size", "fault"),
    [
        ([PAYLOAD[:60]], len(PAYLOAD), WrongSize),  # truncated
        ([PAYLOAD, b"extra"], len(PAYLOAD), WrongSize),  # longer than announced
        ([b"<?xml version='1.0'?><ResponseStatus/>"], 0, BadMagic),
        ([b""], 0, WrongSize),
    ],
)
def test_write_verified_leaves_nothing_on_failure(
    tmp_path: Path, chunks: list[bytes], size: int, fault: type
) -> None:
    final = tmp_path / "seg.ps"
    with pytest.raises(fault):
        write_verified(iter(chunks), final, size)
    assert list(tmp_path.iterdir()) == []


def test_write_verified_removes_part_when_the_stream_breaks(tmp_path: Path) -> None:
    def broken():
        yield PAYLOAD[:50]
        raise ConnectionResetError("peer went away")

    final = tmp_path / "seg.ps"
    with pytest.raises(ConnectionResetError, match="peer went away"):
        write_verified(broken(), final, len(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_mpeg_ps_magic_is_accepted(tmp_path: Path) -> None:
    body = b"\x00\x00\x01\xba" + b"y" * 20
    assert write_verified(iter([body]), tmp_path / "s.ps", len(body)).bytes == len(body)


# -- error classification ----------------------------------------------------------------------


def test_errors_name_the_recorder_and_classify() -> None:
    wrong = WrongCredentials(recorder="nvr-7", status_code=401)
    assert str(wrong) == "wrong credentials for recorder nvr-7"
    down = RecorderUnavailable("timed out", recorder="nvr-7", channel=2, segment="s1")
    assert str(down) == "timed out (recorder nvr-7, channel 2, segment s1)"
    assert is_retryable(down)
    assert is_retryable(CorruptDownload("short", recorder="nvr-7"))
    assert not is_retryable(wrong)
    assert not is_retryable(RecorderProtocolError("bad", recorder="nvr-7"))
    assert not is_retryable(ValueError("x"))


def test_recorder_errors_share_the_service_error_base() -> None:
    assert issubclass(RecorderError, ServiceError)
    assert issubclass(InsufficientPermissions, RecorderError)
    assert issubclass(DownloadRefused, RecorderProtocolError)


def test_new_errors_name_user_action_and_device_words_never_the_password() -> None:
    denied = InsufficientPermissions(
        recorder="nvr-01",
        username="viewer",
        action="POST /ISAPI/ContentMgmt/download",
        device_words="lowPrivilege (Invalid Operation)",
        device_status="lowPrivilege",
        channel=1,
        segment="s1",
    )
    assert str(denied) == (
        "user 'viewer' lacks the rights for POST /ISAPI/ContentMgmt/download on recorder nvr-01: "
        "lowPrivilege (Invalid Operation) (channel 1, segment s1)"
    )
    assert not is_retryable(denied)
    wrong = WrongCredentials(
        recorder="nvr-01", username="admin", status_code=401, device_words="Unauthorized"
    )
    assert str(wrong) == "wrong credentials for recorder nvr-01 (user 'admin'): Unauthorized"
    refused = DownloadRefused(
        recorder="nvr-01",
        refusals=[
            "POST with XML body: HTTP 403 notSupport (Invalid Operation)",
            "GET with XML body: HTTP 405",
        ],
    )
    assert str(refused) == (
        "recorder nvr-01 refused every download form tried: "
        "POST with XML body: HTTP 403 notSupport (Invalid Operation); GET with XML body: HTTP 405"
    )
    assert not is_retryable(refused)


def test_errors_survive_pickling() -> None:
    for error in (
        WrongCredentials(recorder="nvr-7", status_code=401),
        CorruptDownload("short", recorder="nvr-7", channel=3, segment="s9"),
        RecorderProtocolError("bad", recorder="nvr-7", status_code=400, device_status="badXmlContent"),
        InsufficientPermissions(
            recorder="nvr-7",
            username="viewer",
            action="GET /ISAPI/System/time",
            device_words="lowPrivilege (Invalid Operation)",
            device_status="lowPrivilege",
        ),
        DownloadRefused(recorder="nvr-7", refusals=["POST with XML body: HTTP 405"], status_code=405),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert (copy.recorder, copy.channel, copy.segment, copy.status_code, copy.device_status) == (
            error.recorder,
            error.channel,
            error.segment,
            error.status_code,
            error.device_status,
        )
        assert copy.__dict__ == error.__dict__
        assert is_retryable(copy) == is_retryable(error)


def test_block_keeps_the_password_secret() -> None:
    block = HikvisionRecorder(host="fe80::1", port=8443, scheme="https", password="pw-123")
    assert block.base_url() == "https://[fe80::1]:8443"
    assert "pw-123" not in repr(block)
    schema = HikvisionRecorder._to_block_schema(block_type_id=uuid.uuid4())
    assert schema.fields["secret_fields"] == ["password"]
    assert block.channels == [1] and block.max_concurrent_downloads == 2 and block.enabled


def test_a_second_writer_of_the_same_segment_is_told_to_retry(tmp_path: Path) -> None:
    final = tmp_path / "seg.ps"
    with open(final.with_name("seg.ps.part"), "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadBusy):
            write_verified(iter([PAYLOAD]), final, len(PAYLOAD))
    assert not final.exists()
    # Once the lock is free the segment is written normally.
    assert write_verified(iter([PAYLOAD]), final, len(PAYLOAD)).bytes == len(PAYLOAD)
