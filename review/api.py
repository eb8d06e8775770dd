"""The JSON API: the searches of the pages, for integrations (session cookie or HTTP basic)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from blocks.clickhouse import ClickHouseWriter
from review.app import Readers
from review.queries import BadQuery, hourly_filter, iso, object_json, parse_filter, parse_paging, parse_ref


def _readers(request: Request) -> Readers:
    return request.app.state.readers


def _bad(exc: BadQuery) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def objects(request: Request) -> Response:
    """GET /api/objects?recorder=&channel=&label=&start=&end=&min_score=&page=&per_page= (newest first)."""
    try:
        where = parse_filter(request.query_params)
        paging = parse_paging(request.query_params)
    except BadQuery as exc:
        return _bad(exc)
    found = await _readers(request).run(
        lambda ch: ch.search_objects(where, paging.per_page + 1, paging.offset), key=("api", where, paging)
    )
    return JSONResponse({
        "objects": [object_json(row) for row in found[: paging.per_page]],
        "page": paging.page,
        "per_page": paging.per_page,
        "next_page": paging.page + 1 if len(found) > paging.per_page else None,
    })  # fmt: skip


async def one_object(request: Request) -> Response:
    try:
        key = parse_ref(request.path_params["ref"])
    except BadQuery:
        return JSONResponse({"error": "no such object"}, status_code=404)
    row = await _readers(request).run(lambda ch: ch.object_by_key(*key))
    if row is None:
        return JSONResponse({"error": "no such object"}, status_code=404)
    return JSONResponse(object_json(row))


async def hourly(request: Request) -> Response:
    """GET /api/hourly?recorder=&channel=&label=&start=&end= (the last 24 hours by default)."""
    try:
        where = hourly_filter(request.query_params, datetime.now(UTC))
    except BadQuery as exc:
        return _bad(exc)

    def read(ch: ClickHouseWriter) -> list:
        return ch.hourly_objects(where)

    hours = await _readers(request).run(read, key=("hourly", where))
    assert where.start is not None and where.end is not None
    return JSONResponse({
        "start": iso(where.start),
        "end": iso(where.end),
        "hours": [
            {"recorder": h.recorder, "channel": h.channel, "hour": iso(h.hour), "label": h.label,
             "objects": h.objects, "best_score": round(h.best_score, 4)}
            for h in hours
        ],
    })  # fmt: skip
