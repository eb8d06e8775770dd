"""Files of the video store over HTTP: clips with byte ranges (so the browser seeks), thumbnails.

Only keys that `blocks.video_store.check_key` accepts and that stay inside the store are served,
and only the kinds of file the store holds for viewing; anything else is 404, the same answer as a
missing file. Files are streamed in chunks from the store, never read whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import IO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from blocks.video_store import InvalidKey, VideoStore

CHUNK = 256 * 1024
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


class Unsatisfiable(ValueError):
    """A range that starts past the file's end (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte of a single `Range: bytes=...` over a file of `size` bytes.

    None means the whole file: no header, one that is not a single byte range (several ranges
    are answered whole, as RFC 9110 allows), or a malformed one (to be ignored).
    """
    if not header or not header.startswith("bytes=") or "," in header or size == 0:
        return None
    first_text, dash, last_text = header[len("bytes=") :].strip().partition("-")
    if not dash or not (first_text.isdigit() or last_text.isdigit()):
        return None
    if not first_text:  # the last N bytes
        if not last_text.isdigit():
            return None
        suffix = int(last_text)
        if suffix == 0:
            raise Unsatisfiable()
        return max(0, size - suffix), size - 1
    if not first_text.isdigit() or (last_text and not last_text.isdigit()):
        return None
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise Unsatisfiable()
    return first, min(last, size - 1)


async def _chunks(file: IO[bytes], start: int, length: int) -> AsyncIterator[bytes]:
    try:
        await run_in_threadpool(file.seek, start)
        left = length
        while left > 0:
            data = await run_in_threadpool(file.read, min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        await run_in_threadpool(file.close)


def _open(store: VideoStore, key: str) -> tuple[IO[bytes], int]:
    file = store.open(key)
    try:
        size = file.seek(0, 2)
    except BaseException:
        file.close()
        raise
    return file, size


async def serve_store_file(request: Request, store: VideoStore, key: str) -> Response:
    """GET or HEAD of a store file, honouring a single byte range."""
    suffix = "." + key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    content_type = CONTENT_TYPES.get(suffix)
    if content_type is None:
        return PlainTextResponse("not found", status_code=404)
    try:
        file, size = await run_in_threadpool(_open, store, key)
    except (InvalidKey, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return PlainTextResponse("not found", status_code=404)
    headers = {
        "accept-ranges": "bytes",
        "content-type": content_type,
        "cache-control": "private, max-age=3600",
        "x-content-type-options": "nosniff",
    }
    try:
        span = parse_range(request.headers.get("range"), size)
    except Unsatisfiable:
        await run_in_threadpool(file.close)
        return Response(status_code=416, headers=headers | {"content-range": f"bytes */{size}"})
    first, last = span if span is not None else (0, size - 1)
    length = last - first + 1
    status = 206 if span is not None else 200
    if span is not None:
        headers["content-range"] = f"bytes {first}-{last}/{size}"
    headers["content-length"] = str(length)
    if request.method == "HEAD":
        await run_in_threadpool(file.close)
        return Response(status_code=status, headers=headers)
    return StreamingResponse(_chunks(file, first, length), status_code=status, headers=headers)
