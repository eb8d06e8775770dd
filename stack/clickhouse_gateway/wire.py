"""HTTP bodies as clickhouse-connect sends them: chunked, compressed, multipart, INSERT + data."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from email.message import Message
from email.parser import BytesParser
from io import BufferedIOBase
from itertools import chain
from typing import Any

import lz4.frame

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
except ImportError:
    from backports import zstd

from stack.clickhouse_gateway.errors import GatewayError

_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": lz4.frame.compress,
    "zstd": zstd.compress,
    "gzip": lambda data: zlib.compress(data, wbits=31),
    "deflate": zlib.compress,
}
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "lz4": lz4.frame.LZ4FrameDecompressor,
    "zstd": zstd.ZstdDecompressor,
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": zlib.decompressobj,
}
_INSERT_HEAD = re.compile(
    rb"\A(?:\s+|--[^\n]*\n|/\*.*?\*/)*(INSERT\s+INTO\s.*?)\s+FORMAT\s+(\w+)(?=[\s;])", re.I | re.S
)
_HEAD_LIMIT = 1 << 20  # a statement longer than this is not looked at for inline data


def read_body(rfile: BufferedIOBase, headers: Message) -> Iterator[bytes]:
    """The request body as it arrives, sized or chunked (clickhouse-connect streams inserts chunked)."""
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        while size := int(rfile.readline().split(b";")[0].strip() or b"0", 16):
            yield rfile.read(size)
            rfile.readline()
        while rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return
    remaining = int(headers.get("Content-Length") or 0)
    while remaining > 0:
        chunk = rfile.read(min(remaining, 1 << 16))
        if not chunk:
            raise ConnectionError("client closed the connection in the middle of the body")
        remaining -= len(chunk)
        yield chunk


def inflate(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    """Decode Content-Encoding; the body may be several concatenated frames (one per insert block)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        yield from chunks
        return
    if encoding not in _DECOMPRESSORS:
        raise GatewayError.of(638, "UNKNOWN_COMPRESSION_METHOD", f"Unknown Content-Encoding {encoding!r}")
    decoder = _DECOMPRESSORS[encoding]()
    for data in chunks:
        while data:
            yield decoder.decompress(data)
            if not decoder.eof:
                break
            data, decoder = decoder.unused_data, _DECOMPRESSORS[encoding]()


def compress(data: bytes, accept_encoding: str) -> tuple[bytes, str]:
    """Compress with the client's first accepted encoding that we have, as ClickHouse does."""
    for encoding in (item.split(";")[0].strip().lower() for item in accept_encoding.split(",")):
        if encoding in _COMPRESS:
            return _COMPRESS[encoding](data), encoding
    return data, ""


def split_insert(text: Iterator[bytes]) -> tuple[str, str, Iterator[bytes]] | tuple[None, None, bytes]:
    """`INSERT ... FORMAT F` and the data after it, or (None, None, whole text) for any other query.

    As in ClickHouse's parser, data starts after the first newline that follows the format name.
    """
    head, done = b"", False
    while True:
        match = _INSERT_HEAD.match(head)
        # Wait for a few bytes past the format name so the newline rule sees them.
        if match and (done or len(head) - match.end() >= 64):
            start = match.end()
            start += len(head[start:]) - len(head[start:].lstrip(b" \t\f"))
            start += head.startswith(b"\r", start)
            start += head.startswith(b"\n", start)
            return match.group(1).decode(), match.group(2).decode(), chain([head[start:]], text)
        if done or (len(head) > _HEAD_LIMIT and not match):
            return None, None, head + b"".join(text)
        try:
            head += next(text)
        except StopIteration:
            done = True


def form_fields(content_type: str, raw: bytes) -> dict[str, str]:
    """Plain fields of a multipart/form-data body (the client sends long bind parameters this way)."""
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    fields: dict[str, str] = {}
    payload = message.get_payload()  # a list of the parts' messages exactly when the body is multipart
    parts = [part for part in payload if isinstance(part, Message)] if isinstance(payload, list) else []
    for part in parts:
        if part.get_filename():
            raise GatewayError.of(48, "NOT_IMPLEMENTED", "External data is not supported by the gateway")
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            value = part.get_payload(decode=True)  # bytes, or None for a nested multipart part
            fields[name] = value.decode() if isinstance(value, bytes) else ""
    return fields
