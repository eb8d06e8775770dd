"""The documented forms of a `/ISAPI/ContentMgmt/download` request, in the order we try them.

Firmwares each take only some forms of the request, and differ on two things:

- the request line: POST with a `<downloadRequest>` body (the ISAPI manual's, most NVRs),
  GET with the same body (older DVRs), or GET with the playbackURI as a query parameter
  (firmware that reads no body on GET);
- the body's shape: the ISAPI manual's `<downloadRequest version="1.0"
  xmlns="http://www.isapi.org/ver20/XMLSchema">` (what most clients send and most devices
  take), a bare `<downloadRequest>` (what hikload sends; firmware whose schema has no
  namespace), or the older `http://www.hikvision.com/ver20/XMLSchema` namespace that such
  firmware writes in its own answers. The playbackURI is always XML-escaped (`&amp;`):
  scripts that paste it raw send a body no XML parser accepts.

The client tries the forms in this order until one is accepted, then keeps to that one for
the rest of its life. A refusal of the body (badXmlContent and the like) moves on to the next
body on the same request line; any other refusal of the form (methodNotAllowed, notSupport,
405 ...) passes over the request line's other bodies, which the device would refuse the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from blocks.isapi.parsing import download_request

DOWNLOAD_PATH = "/ISAPI/ContentMgmt/download"
ISAPI_NAMESPACE = "http://www.isapi.org/ver20/XMLSchema"
HIKVISION_NAMESPACE = "http://www.hikvision.com/ver20/XMLSchema"


class StreamOptions(TypedDict, total=False):
    content: bytes
    headers: dict[str, str]
    params: dict[str, str]


@dataclass(frozen=True)
class RequestBody:
    """One shape of the `<downloadRequest>` body."""

    name: str  # for messages: "isapi.org", "bare", "hikvision.com"
    namespace: str  # "" for the bare element

    def render(self, playback_uri: str) -> bytes:
        return download_request(playback_uri, self.namespace)


ISAPI_BODY = RequestBody("isapi.org", ISAPI_NAMESPACE)
BARE_BODY = RequestBody("bare", "")
HIKVISION_BODY = RequestBody("hikvision.com", HIKVISION_NAMESPACE)
REQUEST_BODIES: tuple[RequestBody, ...] = (ISAPI_BODY, BARE_BODY, HIKVISION_BODY)


@dataclass(frozen=True)
class DownloadForm:
    method: str
    body: RequestBody | None  # None: the playbackURI goes in the query string

    @property
    def in_query(self) -> bool:
        return self.body is None

    @property
    def request_line(self) -> tuple[str, bool]:
        """The method and where the playbackURI goes: what a refusal of the method is about."""
        return self.method, self.in_query

    @property
    def label(self) -> str:
        """For messages: `POST with isapi.org XML body`, `GET with playbackURI query`."""
        if self.body is None:
            return f"{self.method} with playbackURI query"
        return f"{self.method} with {self.body.name} XML body"

    @property
    def action(self) -> str:
        return f"{self.method} {DOWNLOAD_PATH}"

    def request_options(self, playback_uri: str) -> StreamOptions:
        """Keyword arguments for `httpx.Client.stream` that ask for `playback_uri` in this form."""
        if self.body is None:
            return {"params": {"playbackURI": playback_uri}}
        return {
            "content": self.body.render(playback_uri),
            "headers": {"Content-Type": "application/xml; charset=UTF-8"},
        }


GET_QUERY = DownloadForm("GET", None)
DOWNLOAD_FORMS: tuple[DownloadForm, ...] = (
    *(DownloadForm("POST", body) for body in REQUEST_BODIES),
    *(DownloadForm("GET", body) for body in REQUEST_BODIES),
    GET_QUERY,
)
