"""ISAPIClient: one recorder, one keep-alive HTTP connection pool, digest auth.

Every failure leaves here as a RecorderError subclass naming the recorder (and channel and
segment where relevant, and the device's own words); retrying is the caller's job, except two
firmware fallbacks that are remembered per client: `trackList` for devices that reject
`trackIDList`, and the other documented request forms (`download_forms`: method, and shape
of the body) for devices that refuse the first form of `/ISAPI/ContentMgmt/download`.

The HTTP transport is httpx's own unless one is given: tests hand in an `httpx.MockTransport`
playing a device, so everything above the socket (digest auth included) runs as in production.

What a refusal means is read from the device's ResponseStatus (`refusals`), not from the
HTTP status alone: a Hikvision 403 can be a missing right, a wrong password or a request
form the firmware does not take.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from blocks.isapi.clock import DeviceClock, utc_to_device_text
from blocks.isapi.download import (
    CHUNK_SIZE,
    BadMagic,
    DownloadBusy,
    DownloadFault,
    DownloadResult,
    is_complete,
    write_verified,
)
from blocks.isapi.download_forms import DOWNLOAD_FORMS, DOWNLOAD_PATH, DownloadForm
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
    MAIN_STREAM,
    Recording,
    XmlFormatError,
    new_search_id,
    parse_channels,
    parse_clock,
    parse_device_info,
    parse_response_status,
    parse_search_page,
    search_request,
)
from blocks.isapi.refusals import DeviceRefusal, Refusal, read_refusal, refuses_body

T = TypeVar("T")

SEARCH_PATH = "/ISAPI/ContentMgmt/search"
MAX_SEARCH_PAGES = 5000
ERROR_BODY_LIMIT = 64 * 1024
# An XML answer (device info, a search page of up to 40 matches: some 30 KB) is read up to this.
ANSWER_LIMIT = 4 * 1024 * 1024
# A download whose size neither the search nor the answer announces is cut off at this.
UNANNOUNCED_DOWNLOAD_LIMIT = 16 * 1024**3


class ISAPIClient:
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        username: str,
        password: str,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        verify_tls: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        # For messages only ("user 'viewer' lacks the rights ..."); the password is never kept here.
        self.username = username
        self._http = httpx.Client(
            base_url=base_url,
            auth=httpx.DigestAuth(username, password),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
            verify=verify_tls,
            headers={"Accept": "application/xml, */*"},
            follow_redirects=False,
            transport=transport,
        )
        self._clock: DeviceClock | None = None
        self._clock_read_at = datetime.now(UTC)
        self._track_tag = "trackIDList"
        self._track_tag_settled = False
        self._download_form: DownloadForm = DOWNLOAD_FORMS[0]
        self._download_form_settled = False

    def __enter__(self) -> ISAPIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _transport_error(
        self, exc: Exception, action: str, channel: int | None = None, segment: str | None = None
    ) -> RecorderError:
        if isinstance(exc, httpx.TimeoutException):
            return RecorderUnavailable(
                f"timed out during {action}: {type(exc).__name__}",
                recorder=self.name,
                channel=channel,
                segment=segment,
            )
        if isinstance(exc, httpx.ConnectError):
            return RecorderUnavailable(
                f"cannot connect for {action}: {exc}", recorder=self.name, channel=channel, segment=segment
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.NetworkError)):
            return RecorderUnavailable(
                f"connection lost during {action}: {exc}",
                recorder=self.name,
                channel=channel,
                segment=segment,
            )
        if isinstance(exc, KeyError):
            # httpx looks the digest algorithm up in a table; an unknown one surfaces as KeyError.
            return RecorderProtocolError(
                f"unsupported digest algorithm {exc} during {action}",
                recorder=self.name,
                channel=channel,
                segment=segment,
            )
        return RecorderProtocolError(
            f"HTTP failure during {action}: {exc}", recorder=self.name, channel=channel, segment=segment
        )

    def _status_error(
        self,
        response: httpx.Response,
        body: bytes,
        action: str,
        channel: int | None = None,
        segment: str | None = None,
    ) -> RecorderError:
        refusal = read_refusal(response.status_code, body, _answered_digest_challenge(response))
        return self._refusal_error(refusal, response, action, channel=channel, segment=segment)

    def _refusal_error(
        self,
        refusal: DeviceRefusal,
        response: httpx.Response,
        action: str,
        channel: int | None = None,
        segment: str | None = None,
    ) -> RecorderError:
        """The RecorderError for one refused request, keeping the device's words in the message."""
        code, words, sub_status = refusal.http_status, refusal.words, refusal.sub_status or None
        where: dict[str, Any] = {"recorder": self.name, "channel": channel, "segment": segment}
        if refusal.kind is Refusal.WRONG_CREDENTIALS:
            return WrongCredentials(
                username=self.username,
                status_code=code,
                device_words=words or None,
                device_status=sub_status,
                **where,
            )
        if refusal.kind is Refusal.LOW_PRIVILEGE:
            return InsufficientPermissions(
                username=self.username,
                action=action,
                device_words=words,
                status_code=code,
                device_status=sub_status,
                **where,
            )
        detail = f": {words}" if words else ""
        if refusal.kind is Refusal.NO_DIGEST_CHALLENGE:
            offered = response.headers.get("www-authenticate") or "none"
            return RecorderProtocolError(
                f"HTTP 401 for {action} without a digest challenge to answer "
                f"(WWW-Authenticate: {offered}){detail}",
                status_code=code,
                device_status=sub_status,
                **where,
            )
        cls = RecorderUnavailable if refusal.kind is Refusal.UNAVAILABLE else RecorderProtocolError
        return cls(f"HTTP {code} for {action}{detail}", status_code=code, device_status=sub_status, **where)

    def _call(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        channel: int | None = None,
        segment: str | None = None,
    ) -> bytes:
        action = f"{method} {path}"
        try:
            with self._http.stream(method, path, content=content, headers=_xml_headers(content)) as response:
                if not response.is_success:
                    body = _read_limited(response)
                    raise self._status_error(response, body, action, channel=channel, segment=segment)
                answer = _read_limited(response, ANSWER_LIMIT + 1)
        except (httpx.HTTPError, KeyError) as exc:
            raise self._transport_error(exc, action, channel=channel, segment=segment) from exc
        if len(answer) > ANSWER_LIMIT:
            raise RecorderProtocolError(
                f"answer to {action} is larger than {ANSWER_LIMIT // 1024**2} MiB; not read further",
                recorder=self.name, channel=channel, segment=segment,
            )  # fmt: skip
        return answer

    def _parse(
        self,
        parser: Callable[[bytes], T],
        body: bytes,
        action: str,
        channel: int | None = None,
        segment: str | None = None,
    ) -> T:
        try:
            return parser(body)
        except XmlFormatError as exc:
            status = parse_response_status(body)
            if status is not None:
                # Some firmwares answer 200 with a ResponseStatus describing an error.
                raise RecorderProtocolError(
                    f"{action} refused: {status.describe()}",
                    recorder=self.name,
                    device_status=status.sub_status_code,
                    channel=channel,
                    segment=segment,
                ) from exc
            raise RecorderProtocolError(
                f"unexpected answer to {action}: {exc}", recorder=self.name, channel=channel, segment=segment
            ) from exc

    # -- device facts -----------------------------------------------------------------------

    def device_info(self) -> dict[str, str]:
        body = self._call("GET", "/ISAPI/System/deviceInfo")
        return self._parse(parse_device_info, body, "GET /ISAPI/System/deviceInfo")

    def clock(self) -> DeviceClock:
        if self._clock is None:
            body = self._call("GET", "/ISAPI/System/time")
            self._clock_read_at = datetime.now(UTC)
            self._clock = self._parse(parse_clock, body, "GET /ISAPI/System/time")
        return self._clock

    def clock_skew(self) -> timedelta:
        """How far the device's clock is ahead of this machine's (negative: behind), as last read."""
        clock = self.clock()
        return clock.local_time - self._clock_read_at

    def channels(self) -> list[int]:
        body = self._call("GET", "/ISAPI/Streaming/channels")
        return self._parse(parse_channels, body, "GET /ISAPI/Streaming/channels")

    # -- search -----------------------------------------------------------------------------

    def _search_page_body(self, channel: int, request_for: Callable[[str], bytes]) -> bytes:
        try:
            return self._call("POST", SEARCH_PATH, request_for(self._track_tag), channel=channel)
        except RecorderProtocolError as exc:
            if self._track_tag_settled or not _rejects_request_xml(exc):
                raise
        # Older firmware knows the track list only as <trackList>.
        body = self._call("POST", SEARCH_PATH, request_for("trackList"), channel=channel)
        self._track_tag = "trackList"
        self._track_tag_settled = True
        return body

    def search(
        self, channel: int, start: datetime, end: datetime, stream: int = MAIN_STREAM
    ) -> list[Recording]:
        """Every segment of `channel` overlapping [start, end) (aware datetimes), in UTC, ordered by start.

        `stream`: MAIN_STREAM (track `<channel>01`) or SUB_STREAM (`<channel>02`, the sub-stream
        a recorder keeps where dual-stream recording is on).
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("search needs timezone-aware start and end")
        if end <= start:
            return []
        clock = self.clock()
        track_id = channel * 100 + stream
        start_text = utc_to_device_text(start.astimezone(UTC), clock)
        end_text = utc_to_device_text(end.astimezone(UTC), clock)
        search_id = new_search_id()
        found: dict[str, Recording] = {}
        position = 0
        for _ in range(MAX_SEARCH_PAGES):
            body = self._search_page_body(
                channel, partial(search_request, search_id, track_id, start_text, end_text, position)
            )
            page = self._parse(
                lambda b: parse_search_page(b, self.name, clock), body, f"POST {SEARCH_PATH}", channel=channel
            )
            self._track_tag_settled = True
            for recording in page.recordings:
                if recording.track_id == track_id:
                    found.setdefault(recording.playback_uri, recording)
            if page.status != "MORE":
                break
            if not page.recordings:
                raise RecorderProtocolError(
                    f"search answered MORE with no matches at position {position}",
                    recorder=self.name,
                    channel=channel,
                )
            position += len(page.recordings)
        else:
            raise RecorderProtocolError(
                f"search still answering MORE after {MAX_SEARCH_PAGES} pages",
                recorder=self.name,
                channel=channel,
            )
        return sorted(found.values(), key=lambda r: (r.start, r.end, r.name))

    # -- download ---------------------------------------------------------------------------

    def _download_forms_to_try(self) -> tuple[DownloadForm, ...]:
        """The settled form alone once one worked; every documented form, in order, before."""
        return (self._download_form,) if self._download_form_settled else DOWNLOAD_FORMS

    @contextmanager
    def _download_stream(self, rec: Recording) -> Iterator[httpx.Response]:
        """The accepted download answer, trying the other documented forms while the device
        refuses a form; any other refusal (401, lowPrivilege, 5xx, noRecord ...) ends it at once.

        A refusal of the method (not of the body) rules out the other bodies on that request line.
        """
        channel, segment = rec.channel, rec.name
        refused: list[str] = []
        last: DeviceRefusal | None = None
        ruled_out: set[tuple[str, bool]] = set()
        for form in self._download_forms_to_try():
            if form.request_line in ruled_out:
                continue
            try:
                options = form.request_options(rec.playback_uri)
                with self._http.stream(form.method, DOWNLOAD_PATH, **options) as response:
                    if response.is_success:
                        self._download_form = form
                        self._download_form_settled = True
                        yield response
                        return
                    body = _read_limited(response)
                    last = read_refusal(response.status_code, body, _answered_digest_challenge(response))
                    if last.kind is not Refusal.REQUEST_FORM:
                        raise self._refusal_error(
                            last, response, form.action, channel=channel, segment=segment
                        )
                    refused.append(f"{form.label}: {last.summary()}")
                    if not refuses_body(last):
                        ruled_out.add(form.request_line)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, form.action, channel=channel, segment=segment) from exc
        raise DownloadRefused(
            recorder=self.name,
            refusals=refused,
            status_code=last.http_status if last else None,
            device_status=(last.sub_status or None) if last else None,
            channel=channel,
            segment=segment,
        )

    def download(self, rec: Recording, data_dir: Path) -> DownloadResult:
        """Fetch one segment to `data_dir/<recorder>/<channel>/<day>/<name>.ps`, or reuse a verified copy."""
        channel, segment = rec.channel, rec.name
        try:
            final = segment_path(data_dir, rec.recorder, rec.channel, rec.start, rec.name)
        except UnsafeNameError as exc:
            raise RecorderProtocolError(
                str(exc), recorder=self.name, channel=channel, segment=segment
            ) from exc
        if is_complete(final, rec.size):
            return DownloadResult(final, final.stat().st_size, reused=True)
        try:
            with self._download_stream(rec) as response:
                announced = response.headers.get("content-length", "")
                if rec.size and announced.isdigit() and int(announced) != rec.size:
                    raise CorruptDownload(
                        f"device announces {announced} bytes, search said {rec.size}",
                        recorder=self.name,
                        channel=channel,
                        segment=segment,
                    )
                # Bounded by the announced size: the search's, else the answer's, else a ceiling.
                size = rec.size or (int(announced) if announced.isdigit() else 0)
                try:
                    return write_verified(
                        response.iter_bytes(CHUNK_SIZE), final, size, ceiling=UNANNOUNCED_DOWNLOAD_LIMIT
                    )
                except httpx.HTTPError as exc:
                    raise self._transport_error(
                        exc, self._download_form.action, channel=channel, segment=segment
                    ) from exc
        except BadMagic as exc:
            if exc.head.lstrip()[:1] == b"<":
                raise RecorderProtocolError(
                    "download answered XML instead of media",
                    recorder=self.name,
                    channel=channel,
                    segment=segment,
                ) from exc
            raise CorruptDownload(
                f"download {exc}", recorder=self.name, channel=channel, segment=segment
            ) from exc
        except DownloadBusy as exc:
            raise RecorderUnavailable(
                f"download busy: {exc}", recorder=self.name, channel=channel, segment=segment
            ) from exc
        except DownloadFault as exc:
            raise CorruptDownload(
                f"download {exc}", recorder=self.name, channel=channel, segment=segment
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover


def _xml_headers(content: bytes | None) -> dict[str, str]:
    return {"Content-Type": "application/xml; charset=UTF-8"} if content else {}


def _answered_digest_challenge(response: httpx.Response) -> bool:
    """True when httpx's DigestAuth answered a fresh 401 challenge for this request.

    DigestAuth answers one challenge per request and hands on whatever comes back, so a 401
    reaching us after an answered challenge (it sits in `response.history`) means the
    device refused the credentials themselves. A 401 with no history offered no digest
    challenge at all (Basic only, or none), which is a protocol mismatch, not a wrong password.
    """
    return any(earlier.status_code == 401 for earlier in response.history)


def _read_limited(response: httpx.Response, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """Read at most `limit` bytes of an answer, so a misbehaving device cannot flood us."""
    collected = bytearray()
    for chunk in response.iter_bytes():
        collected += chunk
        if len(collected) >= limit:
            break
    return bytes(collected[:limit])


def _rejects_request_xml(exc: RecorderProtocolError) -> bool:
    """The device found our search XML malformed: the cue for the `trackList` spelling."""
    if exc.status_code == 400:
        return True
    sub_status = (exc.device_status or "").lower()
    return "xml" in sub_status or sub_status in {"badparameters", "invalidcontent", "badxmlcontent"}
