"""The review app's factory: routes, login, headers; the ClickHouse readers it shares.

`create_app(ReviewSettings(...))` takes loaded blocks, so tests and `python -m review` build it
the same way.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
from review.auth import LoginThrottle, RequireLogin, Sessions

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
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


ANSWER_TTL_S = 3.0  # how long a search's answer is given again
MAX_ANSWERS = 512


class Readers:
    """ClickHouse connections shared by the requests: one per request at a time, kept for the next."""

    def __init__(self, sink: ClickHouseSink):
        self.sink = sink
        self._idle: queue.SimpleQueue[ClickHouseWriter] = queue.SimpleQueue()
        self._answers: dict[Hashable, tuple[float, Any]] = {}
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}

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

    async def run(self, read: Callable[[ClickHouseWriter], T], key: Hashable | None = None) -> T:
        """`read(writer)` in a worker thread (clickhouse-connect blocks).

        With a `key` (the search it answers), an answer younger than ANSWER_TTL_S is given again, and
        viewers asking the same at once share one query: many viewers searching alike cost the
        server one query a few seconds, and a new object shows at most that much later.
        """
        if key is None:
            return await run_in_threadpool(self._call, read)
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is not None and now - kept[0] < ANSWER_TTL_S:
            return kept[1]
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(run_in_threadpool(self._call, read))
            self._pending[key] = pending
            try:
                answer = await pending
            finally:
                del self._pending[key]
            if len(self._answers) >= MAX_ANSWERS:  # the oldest goes first
                self._answers.pop(next(iter(self._answers)))
            self._answers[key] = (time.monotonic(), answer)
            return answer
        return await asyncio.shield(pending)

    def _call(self, read: Callable[[ClickHouseWriter], T]) -> T:
        with self.reader() as writer:
            return read(writer)

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
                message = {**message, "headers": [*message.get("headers", []), *extra]}
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
