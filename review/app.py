"""The review app's factory: routes, login, headers; the ClickHouse readers it shares.

`create_app(ReviewSettings(...))` takes loaded blocks, so tests and `python -m review` build it
the same way.
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blocks.clickhouse import ClickHouseSink, ClickHouseUnavailable, ClickHouseWriter
from blocks.video_store import VideoStore
from review.auth import RequireLogin, Sessions

HERE = Path(__file__).resolve().parent
MAX_BODY_BYTES = 8192  # the app takes no uploads: a login form is the largest body
T = TypeVar("T")

SECURITY_HEADERS = [
    # No script, style or media from anywhere else; no inline script; no framing.
    (b"content-security-policy", b"default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
     b"script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]  # fmt: skip


@dataclass
class ReviewSettings:
    sink: ClickHouseSink
    store: VideoStore
    password: SecretStr
    ui_url: str | None = None  # Prefect UI, for links to flow runs
    secure_cookies: bool = False  # behind HTTPS: cookies only over HTTPS
    sessions: Sessions = field(default_factory=Sessions)


class Readers:
    """ClickHouse connections shared by the requests: one per request at a time, kept for the next."""

    def __init__(self, sink: ClickHouseSink):
        self.sink = sink
        self._idle: queue.SimpleQueue[ClickHouseWriter] = queue.SimpleQueue()

    @contextmanager
    def reader(self) -> Iterator[ClickHouseWriter]:
        try:
            writer = self._idle.get_nowait()
        except queue.Empty:
            writer = self.sink.connect()
        try:
            yield writer
        except ClickHouseUnavailable:
            writer.close()  # a broken connection is not handed out again
            raise
        self._idle.put(writer)

    async def run(self, read: Callable[[ClickHouseWriter], T]) -> T:
        """`read(writer)` in a worker thread (clickhouse-connect blocks)."""

        def call() -> T:
            with self.reader() as writer:
                return read(writer)

        return await run_in_threadpool(call)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class SecurityHeaders:
    """The same protective headers on every response, pages and files alike."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = message | {"headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


@asynccontextmanager
async def _closing(readers: Readers) -> AsyncIterator[None]:
    try:
        yield
    finally:
        readers.close()


def create_app(settings: ReviewSettings) -> Starlette:
    from review import api, pages

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    readers = Readers(settings.sink)
    routes = [
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/healthz", pages.healthz, methods=["GET"]),
        Route("/", pages.search, methods=["GET"]),
        Route("/objects/{ref}", pages.object_page, methods=["GET"]),
        Route("/timeline", pages.channel_day, methods=["GET"]),
        Route("/runs", pages.runs, methods=["GET"]),
        Route("/store/{key:path}", pages.store_file, methods=["GET", "HEAD"]),
        Route("/api/objects", api.objects, methods=["GET"]),
        Route("/api/objects/{ref}", api.one_object, methods=["GET"]),
        Route("/api/hourly", api.hourly, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(RequireLogin, sessions=settings.sessions, password=settings.password),
        ],
        exception_handlers={ClickHouseUnavailable: pages.clickhouse_down},
        lifespan=lambda _app: _closing(readers),
        max_body_size=MAX_BODY_BYTES,
    )
    app.state.settings = settings
    app.state.readers = readers
    app.state.templates = templates
    return app
