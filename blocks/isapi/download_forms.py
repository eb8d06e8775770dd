"""The documented forms of a `/ISAPI/ContentMgmt/download` request, in the order we try them.

Hikvision documents three ways to ask for a recording, and firmwares each take only some:
POST with a `<downloadRequest>` body (the ISAPI manual's form, most NVRs), GET with the same
body (older DVRs), and GET with the playbackURI as a query parameter (some firmwares that
read no request body on GET). The client tries them in this order until one is accepted
and then keeps to that one for the rest of its life.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from blocks.isapi.parsing import download_request

DOWNLOAD_PATH = "/ISAPI/ContentMgmt/download"


class StreamOptions(TypedDict, total=False):
    content: bytes
    headers: dict[str, str]
    params: dict[str, str]


@dataclass(frozen=True)
class DownloadForm:
    label: str  # for messages: "POST with XML body"
    method: str
    in_query: bool  # playbackURI as a query parameter instead of an XML body

    @property
    def action(self) -> str:
        return f"{self.method} {DOWNLOAD_PATH}"

    def request_options(self, playback_uri: str) -> StreamOptions:
        """Keyword arguments for `httpx.Client.stream` that ask for `playback_uri` in this form."""
        if self.in_query:
            return {"params": {"playbackURI": playback_uri}}
        body = download_request(playback_uri)
        return {"content": body, "headers": {"Content-Type": "application/xml; charset=UTF-8"}}


POST_XML = DownloadForm("POST with XML body", "POST", in_query=False)
GET_XML = DownloadForm("GET with XML body", "GET", in_query=False)
GET_QUERY = DownloadForm("GET with playbackURI query", "GET", in_query=True)
DOWNLOAD_FORMS: tuple[DownloadForm, ...] = (POST_XML, GET_XML, GET_QUERY)
