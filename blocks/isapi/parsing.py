"""Reading ISAPI XML answers and writing ISAPI requests.

Firmwares disagree on namespaces (hikvision.com ver10/ver20, std-cgi.com, isapi.org,
PSIA's `urn:psialliance-org`, none at all), so everything is matched on local names.
Parsing goes through defusedxml: device answers are untrusted input.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException

from blocks.isapi.clock import DeviceClock, device_clock, device_time_to_utc
from blocks.isapi.naming import UnsafeNameError, sanitise_name

MAX_RESULTS = 40
SEARCH_NAMESPACE = "http://www.isapi.org/ver20/XMLSchema"


class XmlFormatError(ValueError):
    """The answer is not the XML we expect; the client turns it into RecorderProtocolError."""


# A channel's recorded streams: track `<channel>01` is the main stream, `<channel>02` the
# sub-stream (smaller pictures, recorded beside the main one where dual-stream recording is on).
MAIN_STREAM, SUB_STREAM = 1, 2


@dataclass(frozen=True)
class Recording:
    recorder: str
    channel: int
    track_id: int
    start: datetime  # UTC, aware
    end: datetime  # UTC, aware
    playback_uri: str
    name: str  # segment name, sanitised for use as a file name
    size: int  # bytes, from the URI's size=; 0 when the device did not say
    codec: str | None


@dataclass(frozen=True)
class SearchPage:
    status: str  # responseStatusStrg upper-cased: OK, MORE, NO MATCHES
    recordings: list[Recording]


@dataclass(frozen=True)
class ResponseStatus:
    status_code: str
    status_string: str
    sub_status_code: str

    def describe(self) -> str:
        """The device's words, sub status first: `lowPrivilege (Invalid Operation)`."""
        if self.sub_status_code and self.status_string:
            return f"{self.sub_status_code} ({self.status_string})"
        return self.sub_status_code or self.status_string or f"statusCode {self.status_code}"


@dataclass(frozen=True)
class UserCheck:
    """The `userCheck` body Hikvision firmware sends with a 401: login result and lockout state."""

    status_value: str
    status_string: str
    lock_status: str
    unlock_time: str
    retry_login_time: str

    def describe(self) -> str:
        words = [self.status_string or f"statusValue {self.status_value}"]
        if self.lock_status.lower() == "lock":
            words.append(f"account locked for {self.unlock_time} s" if self.unlock_time else "account locked")
        elif self.retry_login_time:
            words.append(f"{self.retry_login_time} login attempts left")
        return ", ".join(words)


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag.split(":")[-1]


def parse_xml(body: bytes | str) -> Element:
    try:
        return SafeElementTree.fromstring(body)
    except DefusedXmlException as exc:
        raise XmlFormatError(f"forbidden XML construct in answer: {type(exc).__name__}") from exc
    except SafeElementTree.ParseError as exc:
        raise XmlFormatError(f"unparseable XML: {exc}") from exc


def children(element: Element, name: str) -> list[Element]:
    return [child for child in element if local_name(child.tag) == name]


def child(element: Element, name: str) -> Element | None:
    for candidate in element:
        if local_name(candidate.tag) == name:
            return candidate
    return None


def descendants(element: Element, name: str) -> Iterator[Element]:
    return (node for node in element.iter() if local_name(node.tag) == name)


def text_of(element: Element | None, name: str, default: str = "") -> str:
    """Text of the first descendant called `name`, stripped."""
    if element is None:
        return default
    for node in descendants(element, name):
        return (node.text or "").strip()
    return default


def parse_response_status(body: bytes | str) -> ResponseStatus | None:
    """The device's ResponseStatus, if the body is one."""
    try:
        root = parse_xml(body)
    except XmlFormatError:
        return None
    if local_name(root.tag) != "ResponseStatus":
        return None
    return ResponseStatus(
        status_code=text_of(root, "statusCode"),
        status_string=text_of(root, "statusString"),
        sub_status_code=text_of(root, "subStatusCode"),
    )


def parse_user_check(body: bytes | str) -> UserCheck | None:
    """The device's userCheck (its answer to a refused login), if the body is one."""
    try:
        root = parse_xml(body)
    except XmlFormatError:
        return None
    if local_name(root.tag) != "userCheck":
        return None
    return UserCheck(
        status_value=text_of(root, "statusValue"),
        status_string=text_of(root, "statusString"),
        lock_status=text_of(root, "lockStatus"),
        unlock_time=text_of(root, "unlockTime"),
        retry_login_time=text_of(root, "retryLoginTime"),
    )


def parse_device_info(body: bytes | str) -> dict[str, str]:
    root = parse_xml(body)
    if local_name(root.tag) != "DeviceInfo":
        raise XmlFormatError(f"expected DeviceInfo, got {local_name(root.tag)}")
    return {local_name(node.tag): (node.text or "").strip() for node in root if len(node) == 0}


def parse_channels(body: bytes | str) -> list[int]:
    """Channel numbers from StreamingChannelList: stream ids 101, 102, 201 ... give channels 1, 2."""
    root = parse_xml(body)
    if local_name(root.tag) not in {"StreamingChannelList", "StreamingChannel"}:
        raise XmlFormatError(f"expected StreamingChannelList, got {local_name(root.tag)}")
    channels: set[int] = set()
    streams = [root] if local_name(root.tag) == "StreamingChannel" else children(root, "StreamingChannel")
    for stream in streams:
        raw_id = text_of(stream, "id")
        # Only direct <id> counts; nested ids belong to Video/Audio sub-elements.
        direct = child(stream, "id")
        if direct is not None:
            raw_id = (direct.text or "").strip()
        if not raw_id.isdigit():
            raise XmlFormatError(f"non-numeric streaming channel id {raw_id!r}")
        channels.add(int(raw_id) // 100)
    return sorted(channel for channel in channels if channel > 0)


def parse_clock(body: bytes | str) -> DeviceClock:
    root = parse_xml(body)
    if local_name(root.tag) != "Time":
        raise XmlFormatError(f"expected Time, got {local_name(root.tag)}")
    local_time = text_of(root, "localTime")
    if not local_time:
        raise XmlFormatError("Time answer without localTime")
    try:
        return device_clock(local_time, text_of(root, "timeZone"))
    except ValueError as exc:
        raise XmlFormatError(str(exc)) from exc


def search_request(
    search_id: str,
    track_id: int,
    start_text: str,
    end_text: str,
    position: int,
    track_tag: str = "trackIDList",
    max_results: int = MAX_RESULTS,
) -> bytes:
    """CMSearchDescription; `searchResultPostion` is the devices' own spelling."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<CMSearchDescription version="1.0" xmlns="{SEARCH_NAMESPACE}">'
        f"<searchID>{escape(search_id)}</searchID>"
        f"<{track_tag}><trackID>{track_id}</trackID></{track_tag}>"
        "<timeSpanList><timeSpan>"
        f"<startTime>{escape(start_text)}</startTime><endTime>{escape(end_text)}</endTime>"
        "</timeSpan></timeSpanList>"
        f"<maxResults>{max_results}</maxResults>"
        f"<searchResultPostion>{position}</searchResultPostion>"
        "<metadataList><metadataDescriptor>//recordType.meta.std-cgi.com</metadataDescriptor></metadataList>"
        "</CMSearchDescription>"
    ).encode()


def new_search_id() -> str:
    return str(uuid.uuid4()).upper()


def download_request(playback_uri: str, namespace: str = "") -> bytes:
    """downloadRequest for one recording, the URI XML-escaped; namespace "" writes the bare element."""
    root = f'downloadRequest version="1.0" xmlns="{escape(namespace)}"' if namespace else "downloadRequest"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<{root}><playbackURI>{escape(playback_uri)}</playbackURI></downloadRequest>"
    ).encode()


def _uri_params(playback_uri: str) -> dict[str, str]:
    query = urlsplit(playback_uri).query
    return {key.lower(): values[0] for key, values in parse_qs(query, keep_blank_values=True).items()}


def _recording(item: Element, recorder: str, clock: DeviceClock) -> Recording:
    track_text = text_of(item, "trackID")
    if not track_text.isdigit():
        raise XmlFormatError(f"searchMatchItem with trackID {track_text!r}")
    track_id = int(track_text)
    span = next(descendants(item, "timeSpan"), None)
    start_text, end_text = text_of(span, "startTime"), text_of(span, "endTime")
    if not start_text or not end_text:
        raise XmlFormatError("searchMatchItem without startTime/endTime")
    # Some answers wrap the URI over lines; whitespace is never part of it.
    playback_uri = "".join(text_of(item, "playbackURI").split())
    if not playback_uri:
        raise XmlFormatError("searchMatchItem without playbackURI")
    try:
        start = device_time_to_utc(start_text, clock)
        end = device_time_to_utc(end_text, clock)
    except ValueError as exc:
        raise XmlFormatError(str(exc)) from exc
    params = _uri_params(playback_uri)
    try:
        name = sanitise_name(params.get("name") or text_of(item, "name"))
    except UnsafeNameError:
        # No usable name from the device: the track and start time identify the segment too.
        name = f"ch{track_id // 100:02d}_{start:%Y%m%dT%H%M%SZ}"
    size_text = params.get("size", "").strip()
    if size_text and not size_text.isdigit():
        raise XmlFormatError(f"playbackURI with size={size_text!r}")
    codec = text_of(item, "codecType") or None
    return Recording(
        recorder=recorder,
        channel=track_id // 100,
        track_id=track_id,
        start=start,
        end=end,
        playback_uri=playback_uri,
        name=name,
        size=int(size_text) if size_text else 0,
        codec=codec,
    )


def parse_search_page(body: bytes | str, recorder: str, clock: DeviceClock) -> SearchPage:
    root = parse_xml(body)
    if local_name(root.tag) != "CMSearchResult":
        raise XmlFormatError(f"expected CMSearchResult, got {local_name(root.tag)}")
    status = " ".join(text_of(root, "responseStatusStrg").upper().split())
    match_list = child(root, "matchList")
    items = children(match_list, "searchMatchItem") if match_list is not None else []
    if status.startswith("NO MATCH"):
        return SearchPage("NO MATCHES", [])
    if status not in {"OK", "MORE"}:
        raise XmlFormatError(f"search answered responseStatusStrg {status!r}")
    return SearchPage(status, [_recording(item, recorder, clock) for item in items])
