"""ISAPI XML documents as Hikvision recorders write and read them."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from defusedxml import ElementTree

from stack.simulator.footage import AUDIO_COMPRESSION, CODEC_TYPE, VIDEO_CODEC_TYPE, audio_kind
from stack.simulator.recordings import Segment
from stack.simulator.spec import RecorderSpec, SimulatorSpec

NS = "http://www.hikvision.com/ver20/XMLSchema"
DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_RESULTS_CAP = 40
LOCAL_Z = "%Y-%m-%dT%H:%M:%SZ"


def _doc(root: str, body: str) -> bytes:
    return f'{DECL}<{root} version="2.0" xmlns="{NS}">\n{body}</{root}>\n'.encode()


def response_status(url: str, status_code: int, status_string: str, sub_status: str) -> bytes:
    return _doc(
        "ResponseStatus",
        f"<requestURL>{escape(url)}</requestURL>\n<statusCode>{status_code}</statusCode>\n"
        f"<statusString>{escape(status_string)}</statusString>\n"
        f"<subStatusCode>{escape(sub_status)}</subStatusCode>\n",
    )


# subStatusCode -> (statusCode, statusString), paired as Hikvision's ResponseStatus pairs them.
SUB_STATUSES = {
    "methodNotAllowed": (4, "Invalid Operation"),
    "notSupport": (4, "Invalid Operation"),
    "invalidOperation": (4, "Invalid Operation"),
    "lowPrivilege": (4, "Invalid Operation"),
    "badAuthorization": (4, "Invalid Operation"),
    "badXmlFormat": (5, "Invalid XML Format"),
    "badXmlContent": (6, "Invalid XML Content"),
    "badParameters": (6, "Invalid XML Content"),
}


def refusal(url: str, sub_status: str) -> bytes:
    """The ResponseStatus a device sends with a refusal named by its subStatusCode."""
    code, text = SUB_STATUSES[sub_status]
    return response_status(url, code, text, sub_status)


def user_check_401() -> bytes:
    return (
        f'{DECL}<userCheck version="2.0" xmlns="{NS}">\n<statusValue>401</statusValue>\n'
        "<statusString>Unauthorized</statusString>\n</userCheck>\n"
    ).encode()


def device_info(rec: RecorderSpec) -> bytes:
    mac = f"44:19:b6:{(rec.port >> 16) & 0xFF:02x}:{(rec.port >> 8) & 0xFF:02x}:{rec.port & 0xFF:02x}"
    return _doc(
        "DeviceInfo",
        f"<deviceName>{escape(rec.name)}</deviceName>\n"
        f"<deviceID>{rec.port:08d}-0000-4000-8000-{rec.port:012d}</deviceID>\n"
        f"<model>{escape(rec.model)}</model>\n<serialNumber>{escape(rec.serial)}</serialNumber>\n"
        f"<macAddress>{mac}</macAddress>\n<firmwareVersion>{escape(rec.firmware)}</firmwareVersion>\n"
        "<firmwareReleasedDate>build 260101</firmwareReleasedDate>\n"
        "<encoderVersion>V7.3</encoderVersion>\n<encoderReleasedDate>build 251201</encoderReleasedDate>\n"
        f"<deviceType>NVR</deviceType>\n<telecontrolID>255</telecontrolID>\n"
        f"<videoInputNum>{len(rec.channels)}</videoInputNum>\n",
    )


def device_time(rec: RecorderSpec, now_utc: datetime) -> bytes:
    local = now_utc.astimezone(rec.tz).replace(microsecond=0)
    return _doc(
        "Time",
        f"<timeMode>NTP</timeMode>\n<localTime>{local.isoformat()}</localTime>\n"
        f"<timeZone>{escape(rec.timezone)}</timeZone>\n",
    )


def streaming_channels(rec: RecorderSpec, spec: SimulatorSpec) -> bytes:
    """Main (x01) and sub (x02) stream of every channel, as NVRs list them."""
    items = []
    for ch in rec.channels:
        kind = audio_kind(ch.audio)
        for stream, (w, h) in ((1, (spec.width, spec.height)), (2, (spec.width // 2, spec.height // 2))):
            audio = (
                f"<Audio>\n<enabled>true</enabled>\n<audioInputChannelID>{ch.id}</audioInputChannelID>\n"
                f"<audioCompressionType>{AUDIO_COMPRESSION[kind]}</audioCompressionType>\n</Audio>\n"
                if kind != "none"
                else "<Audio>\n<enabled>false</enabled>\n</Audio>\n"
            )
            items.append(
                f'<StreamingChannel version="2.0" xmlns="{NS}">\n<id>{ch.id * 100 + stream}</id>\n'
                f"<channelName>Camera {ch.id:02d}</channelName>\n<enabled>true</enabled>\n"
                "<Transport>\n<ControlProtocolList>\n<ControlProtocol>\n"
                "<streamingTransport>RTSP</streamingTransport>\n</ControlProtocol>\n"
                "</ControlProtocolList>\n</Transport>\n"
                f"<Video>\n<enabled>true</enabled>\n<videoInputChannelID>{ch.id}</videoInputChannelID>\n"
                f"<videoCodecType>{VIDEO_CODEC_TYPE[ch.codec]}</videoCodecType>\n"
                f"<videoResolutionWidth>{w}</videoResolutionWidth>\n"
                f"<videoResolutionHeight>{h}</videoResolutionHeight>\n"
                f"<maxFrameRate>{spec.fps * 100}</maxFrameRate>\n<GovLength>{spec.fps * 2}</GovLength>\n"
                f"</Video>\n{audio}</StreamingChannel>\n"
            )
    return _doc("StreamingChannelList", "".join(items))


def record_tracks(rec: RecorderSpec) -> bytes:
    tracks = "".join(
        f"<Track>\n<id>{ch.id * 100 + stream}</id>\n<Channel>{ch.id}</Channel>\n<Enable>true</Enable>\n"
        "<LoopEnable>true</LoopEnable>\n</Track>\n"
        for ch in rec.channels
        for stream in ((1, 2) if ch.sub_size else (1,))
    )
    return _doc("TrackList", tracks)


def search_profile(rec: RecorderSpec) -> bytes:
    return _doc(
        "CMSearchProfile",
        f"<searchProfile>Full</searchProfile>\n<maxSearchTimespans>1</maxSearchTimespans>\n"
        f"<maxSearchTracks>{len(rec.channels)}</maxSearchTracks>\n"
        f"<maxSearchResults>{MAX_RESULTS_CAP}</maxSearchResults>\n"
        f"<trackElement>{rec.track_element}</trackElement>\n",
    )


def download_capabilities() -> bytes:
    return _doc(
        "DownloadAbility",
        "<isSupportDownloadbyTime>true</isSupportDownloadbyTime>\n"
        "<isSupportDownloadbyFileName>true</isSupportDownloadbyFileName>\n",
    )


class BadRequest(ValueError):
    """The request body is not what the device accepts."""


@dataclass
class SearchRequest:
    search_id: str
    tracks: set[int]
    spans: list[tuple[datetime, datetime]]
    max_results: int
    position: int
    track_elements: frozenset[str] = frozenset()  # which of trackIDList/trackList carried the IDs


def _local(rec_tz: timezone, text: str) -> datetime:
    """Device local time from a search time: a trailing Z means local time, as on devices."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1]
        if raw.endswith(("+00:00", "-00:00")):
            raw = raw[:-6]  # hikload writes isoformat() + "Z" for aware datetimes
        return datetime.fromisoformat(raw).replace(tzinfo=None)
    parsed = datetime.fromisoformat(raw)
    if parsed.tzinfo is None:
        return parsed
    return parsed.astimezone(rec_tz).replace(tzinfo=None)


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node, name: str) -> list:
    return [c for c in node if _strip_ns(c.tag) == name]


def _text(node, name: str, default: str = "") -> str:
    found = _children(node, name)
    return (found[0].text or "").strip() if found else default


def parse_search(body: bytes, rec_tz: timezone) -> SearchRequest:
    try:
        root = ElementTree.fromstring(body)
    except Exception as exc:  # defusedxml raises several types for hostile or broken XML
        raise BadRequest(f"invalid XML: {exc}") from exc
    if _strip_ns(root.tag) != "CMSearchDescription":
        raise BadRequest("expected CMSearchDescription")
    tracks: set[int] = set()
    elements: set[str] = set()
    for list_name in ("trackIDList", "trackList"):
        for track_list in _children(root, list_name):
            for track in _children(track_list, "trackID"):
                if (track.text or "").strip().isdigit():
                    tracks.add(int(track.text.strip()))
                    elements.add(list_name)
    if not tracks:
        raise BadRequest("no trackID in trackIDList/trackList")
    spans = []
    for span_list in _children(root, "timeSpanList"):
        for span in _children(span_list, "timeSpan"):
            try:
                start = _local(rec_tz, _text(span, "startTime"))
                end = _local(rec_tz, _text(span, "endTime"))
            except ValueError as exc:
                raise BadRequest(f"bad time in timeSpan: {exc}") from exc
            spans.append((start, end))
    if not spans:
        raise BadRequest("no timeSpan")
    try:
        max_results = int(_text(root, "maxResults", "40") or 40)
        position_text = _text(root, "searchResultPostion") or _text(root, "searchResultPosition", "0")
        position = int(position_text or 0)
    except ValueError as exc:
        raise BadRequest(f"bad number: {exc}") from exc
    return SearchRequest(
        search_id=_text(root, "searchID"),
        tracks=tracks,
        spans=spans,
        max_results=max(1, min(max_results, MAX_RESULTS_CAP)),
        position=max(0, position),
        track_elements=frozenset(elements),
    )


# A malicious device's search answers. The bomb is a kilobyte that expands to 10^9 "lol"s; the
# entity asks the parser to read a file of the machine that parses it.
XML_BOMB = (
    DECL
    + '<!DOCTYPE CMSearchResult [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n' for i in range(1, 10)
    )
    + ']>\n<CMSearchResult version="2.0" xmlns="'
    + NS
    + '"><searchID>&lol9;</searchID>'
    "<responseStatusStrg>OK</responseStatusStrg></CMSearchResult>\n"
).encode()
EXTERNAL_ENTITY = (
    DECL + '<!DOCTYPE CMSearchResult [<!ENTITY leak SYSTEM "file:///etc/passwd">]>\n'
    '<CMSearchResult version="2.0" xmlns="' + NS + '"><searchID>&leak;</searchID>'
    "<responseStatusStrg>OK</responseStatusStrg><numOfMatches>0</numOfMatches></CMSearchResult>\n"
).encode()
ENDLESS_SEARCH_HEAD = (DECL + f'<CMSearchResult version="2.0" xmlns="{NS}">\n<matchList>\n').encode()
ENDLESS_SEARCH_ITEM = b"<searchMatchItem><trackID>101</trackID></searchMatchItem>\n" * 64
# Put in front of every segment name by a device with hostile names: shell metacharacters and
# a way out of the data folder, as a name and as a path.
HOSTILE_NAME_PREFIX = "../../$(touch${IFS}/tmp/nvrflow-pwned);`id`|"


def search_result(request: SearchRequest, matches: list[Segment], name_prefix: str = "") -> bytes:
    page = matches[request.position : request.position + request.max_results]
    if not page:
        status = "NO MATCHES"
    elif request.position + len(page) < len(matches):
        status = "MORE"
    else:
        status = "OK"
    items = []
    for seg in page:
        items.append(
            "<searchMatchItem>\n"
            f"<sourceID>{{{seg.track_id:08d}-0000-0000-0000-000000000000}}</sourceID>\n"
            f"<trackID>{seg.track_id}</trackID>\n"
            f"<timeSpan>\n<startTime>{seg.start.strftime(LOCAL_Z)}</startTime>\n"
            f"<endTime>{seg.end.strftime(LOCAL_Z)}</endTime>\n</timeSpan>\n"
            "<mediaSegmentDescriptor>\n<contentType>video</contentType>\n"
            f"<codecType>{CODEC_TYPE[seg.channel.codec]}</codecType>\n"
            f"<playbackURI>{escape(seg.playback_uri(name_prefix=name_prefix))}</playbackURI>\n</mediaSegmentDescriptor>\n"
            "<metadataMatches>\n<metadataDescriptor>recordType.meta.std-cgi.com/CMR</metadataDescriptor>\n"
            "</metadataMatches>\n</searchMatchItem>\n"
        )
    match_list = f"<matchList>\n{''.join(items)}</matchList>\n" if items else ""
    return _doc(
        "CMSearchResult",
        f"<searchID>{escape(request.search_id)}</searchID>\n<responseStatus>true</responseStatus>\n"
        f"<responseStatusStrg>{status}</responseStatusStrg>\n<numOfMatches>{len(page)}</numOfMatches>\n"
        f"{match_list}",
    )


# The shapes of a downloadRequest body, by the namespace of its root element.
DOWNLOAD_BODY_SHAPES = {
    "http://www.isapi.org/ver20/XMLSchema": "isapi",
    "http://www.hikvision.com/ver20/XMLSchema": "hikvision",
    "": "bare",
}


def download_body_shape(body: bytes) -> str:
    """isapi, hikvision or bare: the namespace of a downloadRequest; `other` for anything else,
    including a body that is not XML (a raw `&` in the URI)."""
    try:
        root = ElementTree.fromstring(body)
    except Exception:  # any parse failure: not a body a schema-checking firmware takes
        return "other"
    namespace, name = root.tag[1:].split("}", 1) if root.tag.startswith("{") else ("", root.tag)
    if name != "downloadRequest":
        return "other"
    return DOWNLOAD_BODY_SHAPES.get(namespace, "other")


_URI_RE = re.compile(rb"<(?:\w+:)?playbackURI>(.*?)</(?:\w+:)?playbackURI>", re.S)


def parse_download(body: bytes) -> str:
    """The playbackURI of a downloadRequest; tolerant of raw `&` as some clients send it."""
    try:
        root = ElementTree.fromstring(body)
        for node in root.iter():
            if _strip_ns(node.tag) == "playbackURI" and node.text:
                return node.text.strip()
    except Exception:  # fall back to the lenient scan below, as device firmware does
        pass
    match = _URI_RE.search(body)
    if match:
        return html.unescape(match.group(1).decode("utf-8", "replace")).strip()
    raise BadRequest("no playbackURI in downloadRequest")
