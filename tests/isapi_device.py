"""A Hikvision recorder in a test's hands: an `httpx.MockTransport` handler speaking enough ISAPI.

`ISAPIClient` runs against it as against a device, minus the socket: digest auth is real (the
simulator's `DigestAuthority` issues the challenge and checks the `Authorization` header),
refusals carry the ResponseStatus and userCheck bodies firmware writes (the simulator's
`isapi_xml`), searches are read as devices read them (device-local times, `searchResultPostion`,
pages of at most 40 with MORE). What the device refuses is set on its attributes; every request
it saw is kept, so "asked once, not retried" is checked by counting requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import httpx

from blocks.isapi.client import ISAPIClient
from stack.simulator import isapi_xml
from stack.simulator.digest import DigestAuthority

PASSWORD = "s3cret-Pa55word"
BASE_URL = "http://nvr.test"
SEARCH = "/ISAPI/ContentMgmt/search"
DOWNLOAD = "/ISAPI/ContentMgmt/download"
# Hikvision's 40-byte media header, then an MPEG-PS pack header and some payload.
MEDIA = b"IMKH" + bytes(36) + b"\x00\x00\x01\xba" + bytes(2000)


@dataclass(frozen=True)
class FakeSegment:
    """One recording, its times device-local wall time as the device keeps them."""

    name: str
    start: datetime
    end: datetime
    track_id: int = 101
    media: bytes = MEDIA

    def playback_uri(self) -> str:
        return (
            f"rtsp://10.0.0.1/Streaming/tracks/{self.track_id}/?starttime={self.start:%Y%m%dT%H%M%S}Z"
            f"&endtime={self.end:%Y%m%dT%H%M%S}Z&name={quote(self.name, safe='')}&size={len(self.media)}"
        )


def segments_every(
    start: datetime, seconds: int, count: int, track_id: int = 101, prefix: str = "000000"
) -> list[FakeSegment]:
    """`count` back-to-back segments of `seconds` from device-local `start`."""
    step = timedelta(seconds=seconds)
    return [
        FakeSegment(f"{prefix}{index:05d}", start + index * step, start + (index + 1) * step, track_id)
        for index in range(count)
    ]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: bytes


@dataclass
class FakeDevice:
    name: str = "nvr-fake"
    username: str = "admin"
    password: str = PASSWORD
    algorithm: str = "MD5"
    # The device's clock: wall time now, the zone string it reports, and that zone's offset.
    local_now: datetime = datetime(2026, 3, 1, 12, 0, 0)
    timezone: str = "CST-8:00:00"
    utc_offset: timedelta = timedelta(hours=8)
    segments: list[FakeSegment] = field(default_factory=list)
    # "trackList": firmware that knows only that spelling and refuses <trackIDList> (400 badXmlContent).
    track_element: str = "trackIDList"
    # Each search page starts this many items before the asked position (firmware that repeats items).
    page_overlap: int = 0
    reverse_pages: bool = False

    # -- faults, changed by tests at any time --------------------------------------------------
    wrong_password: bool = False
    # What a 401 offers instead of a digest challenge, e.g. 'Basic realm="x"'; None: a digest challenge.
    no_digest_challenge: str | None = None
    # Path -> (HTTP status, subStatusCode) answered after a successful login, e.g. 403 lowPrivilege.
    refusals: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Download form (post_xml, get_xml, get_query) -> (HTTP status, subStatusCode); "": no body.
    download_refusals: dict[str, tuple[int, str]] = field(default_factory=dict)
    # The one body shape (isapi, hikvision, bare) taken; others get 400 badXmlContent. "": any.
    download_body: str = ""
    # (HTTP status, subStatusCode) for the next requests, one each, after the login (a busy device).
    fail_next: list[tuple[int, str]] = field(default_factory=list)
    # Replaces every search answer (an XML bomb, an oversized answer ...).
    search_answer: bytes | None = None
    # Downloads announce and send 1 KiB less than the recording's size (as the simulator's wrong_size).
    wrong_size: bool = False
    # Download bodies stop after this many bytes: cut short while announcing the full length (0: whole).
    truncate_downloads_at: int = 0
    # Download bodies break (a network error) after this many bytes (0: never).
    break_downloads_after: int = 0

    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.auth = DigestAuthority(realm="DS-7608NI-K2", algorithm=self.algorithm)

    # -- for tests -------------------------------------------------------------------------------

    def client(self, password: str | None = None) -> ISAPIClient:
        """An ISAPIClient for this device's account through a MockTransport; its password unless told."""
        return ISAPIClient(
            name=self.name,
            base_url=BASE_URL,
            username=self.username,
            password=self.password if password is None else password,
            transport=httpx.MockTransport(self),
        )

    def count(self, path: str) -> int:
        """Requests this device saw for `path`."""
        return sum(1 for seen in self.requests if seen.path == path)

    def download_forms(self) -> list[str]:
        """The download requests seen, as `post_isapi`, `get_bare`, `get_query` ..., in order."""
        return [
            f"{seen.method.lower()}_{isapi_xml.download_body_shape(seen.body) if seen.body else 'query'}"
            for seen in self.requests
            if seen.path == DOWNLOAD
        ]

    # -- the device -----------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        path = request.url.path
        self.requests.append(Seen(request.method, path, body))
        if self.wrong_password or not self.auth.verify(
            request.headers.get("authorization"), request.method, self.username, self.password
        ):
            return self._unauthorized()
        if path in self.refusals:
            return self._refuse(path, *self.refusals[path])
        if self.fail_next:
            return self._refuse(path, *self.fail_next.pop(0))
        if path == "/ISAPI/System/deviceInfo":
            return _xml(
                _doc("DeviceInfo", f"<deviceName>{self.name}</deviceName>\n<model>DS-7608NI-K2</model>\n")
            )
        if path == "/ISAPI/System/time":
            local = self.local_now.replace(tzinfo=timezone(self.utc_offset))
            return _xml(_doc(
                "Time", f"<localTime>{local.isoformat()}</localTime>\n<timeZone>{self.timezone}</timeZone>\n"
            ))  # fmt: skip
        if path == "/ISAPI/Streaming/channels":
            tracks = sorted({seg.track_id // 100 for seg in self.segments} or {1})
            items = "".join(
                f"<StreamingChannel><id>{ch}{stream:02d}</id></StreamingChannel>\n"
                for ch in tracks
                for stream in (1, 2)
            )
            return _xml(_doc("StreamingChannelList", items))
        if path == SEARCH and request.method == "POST":
            return self._search(body)
        if path == DOWNLOAD:
            return self._download(request, body)
        return self._refuse(path, 404, "notSupport")

    def _unauthorized(self) -> httpx.Response:
        if self.no_digest_challenge is not None:
            headers = {"WWW-Authenticate": self.no_digest_challenge} if self.no_digest_challenge else {}
            return httpx.Response(401, headers=headers)
        return httpx.Response(
            401, content=isapi_xml.user_check_401(), headers={"WWW-Authenticate": self.auth.challenge()}
        )

    def _refuse(self, path: str, status: int, sub_status: str) -> httpx.Response:
        """Refuse as firmware does: the status plus a ResponseStatus naming the reason (none if "")."""
        if not sub_status:
            return httpx.Response(status)
        if sub_status in isapi_xml.SUB_STATUSES:
            return _xml(isapi_xml.refusal(path, sub_status), status)
        code, words = (6, "Device Error") if status >= 500 else (4, "Invalid Operation")
        return _xml(isapi_xml.response_status(path, code, words, sub_status), status)

    def _search(self, body: bytes) -> httpx.Response:
        if self.search_answer is not None:
            return _xml(self.search_answer)
        try:
            asked = isapi_xml.parse_search(body, timezone(self.utc_offset))
        except isapi_xml.BadRequest:
            return self._refuse(SEARCH, 400, "badXmlContent")
        if self.track_element == "trackList" and "trackIDList" in asked.track_elements:
            return self._refuse(SEARCH, 400, "badXmlContent")
        matches = [
            seg
            for seg in self.segments
            if seg.track_id in asked.tracks
            and any(seg.start < end and seg.end > start for start, end in asked.spans)
        ]
        first = max(0, asked.position - self.page_overlap)
        page = matches[first : first + asked.max_results]
        more = first + len(page) < len(matches)
        if self.reverse_pages:
            page.reverse()
        return _xml(search_page(page, "MORE" if more else ("OK" if page else "NO MATCHES")))

    def _download(self, request: httpx.Request, body: bytes) -> httpx.Response:
        form = f"{request.method.lower()}_{'xml' if body.strip() else 'query'}"
        if form in self.download_refusals:
            return self._refuse(DOWNLOAD, *self.download_refusals[form])
        if body.strip():
            if self.download_body and isapi_xml.download_body_shape(body) != self.download_body:
                return self._refuse(DOWNLOAD, 400, "badXmlContent")
            uri = isapi_xml.parse_download(body)
        else:
            uri = request.url.params.get("playbackURI", "")
        found = [seg for seg in self.segments if seg.playback_uri() == uri]
        if not found:
            return self._refuse(DOWNLOAD, 404, "noRecord")
        media = found[0].media
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(media))}
        if self.break_downloads_after:
            return httpx.Response(200, headers=headers, stream=_Breaking(media[: self.break_downloads_after]))
        if self.wrong_size:
            media = media[:-1024]
            headers["Content-Length"] = str(len(media))
        if self.truncate_downloads_at:
            media = media[: self.truncate_downloads_at]
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(media))


class _Breaking(httpx.SyncByteStream):
    """A body that sends its first bytes, then fails as a dropped connection does."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")


def search_page(segments: list[FakeSegment], status: str) -> bytes:
    """A CMSearchResult as firmware writes it: device-local times with a bogus `Z`, `&amp;` in URIs."""
    items = "".join(
        f"<searchMatchItem><sourceID>{{0000}}</sourceID><trackID>{seg.track_id}</trackID>"
        f"<timeSpan><startTime>{seg.start:%Y-%m-%dT%H:%M:%S}Z</startTime>"
        f"<endTime>{seg.end:%Y-%m-%dT%H:%M:%S}Z</endTime></timeSpan>"
        "<mediaSegmentDescriptor><contentType>video</contentType><codecType>H.264-BP</codecType>"
        f"<playbackURI>{seg.playback_uri().replace('&', '&amp;')}</playbackURI></mediaSegmentDescriptor>"
        "</searchMatchItem>\n"
        for seg in segments
    )
    return _doc(
        "CMSearchResult",
        f"<searchID>{{0}}</searchID><responseStatus>true</responseStatus>"
        f"<responseStatusStrg>{status}</responseStatusStrg><numOfMatches>{len(segments)}</numOfMatches>"
        f"<matchList>\n{items}</matchList>\n",
    )


def _doc(root: str, body: str) -> bytes:
    return f'{isapi_xml.DECL}<{root} version="2.0" xmlns="{isapi_xml.NS}">\n{body}</{root}>\n'.encode()


def _xml(body: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"Content-Type": "application/xml"})
