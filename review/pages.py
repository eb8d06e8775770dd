"""The review app's pages: login, search, an object, a channel's day, the runs; store files.

Each handler reads its query (`review.queries`), asks ClickHouse through the sink's reads in a
worker thread, and renders a template. Times are shown and taken in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from blocks.clickhouse import ClickHouseUnavailable, ClickHouseWriter, ObjectFilter
from review import charts
from review.app import Readers, ReviewSettings
from review.auth import COOKIE, FormTooLarge, password_matches, read_form, safe_next
from review.files import serve_store_file
from review.queries import (
    BadQuery,
    iso,
    object_ref,
    parse_day,
    parse_filter,
    parse_paging,
    parse_ref,
    parse_time,
    query_string,
    store_url,
)
from review.runs import run_trouble

TIMELINE_LIMIT = 5000  # objects drawn on a channel's day at most


def _settings(request: Request) -> ReviewSettings:
    return request.app.state.settings


def _readers(request: Request) -> Readers:
    return request.app.state.readers


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    context |= {"iso": iso, "store_url": store_url, "object_ref": object_ref}
    response = request.app.state.templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["cache-control"] = "no-store"
    return response


# -- login ---------------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), error="")


async def login(request: Request) -> Response:
    settings = _settings(request)
    try:
        form = await read_form(request)
    except FormTooLarge:
        return PlainTextResponse("form too large", status_code=413)
    target = safe_next(form.get("next"))
    client = request.client.host if request.client else ""
    if settings.throttle.blocked(client):
        return render(
            request, "login.html", status=429, next=target, error="Too many wrong passwords: wait a minute."
        )
    if not password_matches(form.get("password", ""), settings.password):
        settings.throttle.failed(client)
        return render(request, "login.html", status=401, next=target, error="Wrong password.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        settings.sessions.issue(),
        max_age=settings.sessions.lifetime_s,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies or request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    _settings(request).sessions.revoke(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def clickhouse_down(request: Request, exc: Exception) -> Response:
    message = str(exc) if isinstance(exc, ClickHouseUnavailable) else "ClickHouse unavailable"
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=503)
    return render(request, "error.html", status=503, message=message)


def bad_query(request: Request, exc: BadQuery) -> Response:
    return render(request, "error.html", status=400, message=str(exc))


# -- search and objects --------------------------------------------------------------------------


async def search(request: Request) -> Response:
    try:
        where = parse_filter(request.query_params)
        paging = parse_paging(request.query_params)
    except BadQuery as exc:
        return bad_query(request, exc)

    def read(ch: ClickHouseWriter) -> tuple[list, list]:
        found = ch.search_objects(where, paging.per_page + 1, paging.offset)
        return found, ch.object_choices()

    found, choices = await _readers(request).run(read, key=("search", where, paging))
    more = len(found) > paging.per_page
    return render(
        request,
        "search.html",
        objects=found[: paging.per_page],
        where=where,
        paging=paging,
        recorders=sorted({r for r, _, _ in choices}),
        channels=sorted({c for _, c, _ in choices}),
        labels=sorted({label for _, _, label in choices}),
        previous_link=f"/?{query_string(where, page=paging.page - 1, per_page=paging.per_page)}"
        if paging.page > 1
        else "",
        next_link=f"/?{query_string(where, page=paging.page + 1, per_page=paging.per_page)}" if more else "",
    )


async def object_page(request: Request) -> Response:
    try:
        key = parse_ref(request.path_params["ref"])
    except BadQuery:
        return render(request, "error.html", status=404, message="No such object.")
    row = await _readers(request).run(lambda ch: ch.object_by_key(*key))
    if row is None:
        return render(request, "error.html", status=404, message="No such object.")
    return render(request, "object.html", o=row, day=row.start.date().isoformat())


# -- a channel's day, the runs -------------------------------------------------------------------


async def channel_day(request: Request) -> Response:
    params = request.query_params
    try:
        where = parse_filter({"recorder": params.get("recorder", ""), "channel": params.get("channel", "")})
        day = parse_day(params, datetime.now(UTC).date())
    except BadQuery as exc:
        return bad_query(request, exc)
    if where.recorder is None or where.channel is None:
        return render(request, "error.html", status=400, message="recorder and channel: both needed")
    start = datetime.combine(day, time(), UTC)
    end = start + timedelta(days=1)
    day_filter = ObjectFilter(where.recorder, where.channel, None, start, end)

    def read(ch: ClickHouseWriter) -> tuple[list, list]:
        return ch.search_objects(day_filter, TIMELINE_LIMIT), ch.hourly_objects(day_filter)

    found, hours = await _readers(request).run(read, key=("day", day_filter))
    settings = _settings(request)
    trouble = await run_in_threadpool(run_trouble, settings.sink, start, end, settings.ui_url, where.recorder)
    colours = charts.label_colours([o.label for o in found] + [h.label for h in hours])
    bars, top = charts.hourly_bars(hours, start, colours)
    return render(
        request,
        "timeline.html",
        recorder=where.recorder,
        channel=where.channel,
        day=day,
        previous_day=(day - timedelta(days=1)).isoformat(),
        next_day=(day + timedelta(days=1)).isoformat(),
        timeline=charts.timeline(found, start, colours),
        truncated=len(found) >= TIMELINE_LIMIT,
        bars=bars,
        top=top,
        colours=colours,
        trouble=trouble,
        search_link="/?" + query_string(day_filter),
    )


async def runs(request: Request) -> Response:
    params = request.query_params
    try:
        end = parse_time(params["end"], "end") if params.get("end") else datetime.now(UTC)
        start = parse_time(params["start"], "start") if params.get("start") else end - timedelta(days=1)
    except BadQuery as exc:
        return bad_query(request, exc)
    if end <= start or end - start > timedelta(days=31):
        return render(
            request, "error.html", status=400, message="start, end: end after start, at most 31 days"
        )
    settings = _settings(request)
    recorder = params.get("recorder") or None
    trouble = await run_in_threadpool(run_trouble, settings.sink, start, end, settings.ui_url, recorder)
    return render(request, "runs.html", start=start, end=end, trouble=trouble, recorder=recorder or "")


async def store_file(request: Request) -> Response:
    return await serve_store_file(request, _settings(request).store, request.path_params["key"])
