"""The dashboard's HTTP server (aiohttp): the static page and the JSON endpoints it polls.

Why aiohttp: the worker already depends on it, so the dashboard adds no web stack.  The page and its
chart library (uPlot, vendored under ``static/`` with its licence) are served from this package, so the
dashboard works on a machine without internet.  Queries are blocking SQLAlchemy calls and run in a
thread so one slow query does not stall the other requests.

Endpoints (all GET, JSON, read-only):

* ``/api/config``          refresh interval and the thin-bucket threshold the page uses
* ``/api/series``          ``?since=24h&bucket=hour[&topic=]``: per topic, volume and negative share with its band
* ``/api/alerts``          ``?since=7d[&topic=]``: alert events newest first, evidence as stored
* ``/api/alerts/{id}``     one alert, its incident and the posts behind it
* ``/api/posts``           ``?topic=&start=&end=`` (ISO times): one topic's posts in a bucket
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from stream.dashboard.read_model import DashboardReader, QueryError

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("stream.dashboard") / "static"))
READER_KEY = web.AppKey("reader", DashboardReader)
REFRESH_KEY = web.AppKey("refresh_s", float)

# The page loads only its own files; data from posts is inserted as text, never as markup.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(reader: DashboardReader, refresh_s: float = 10.0) -> web.Application:
    """The aiohttp application; ``sentistream dashboard`` runs it, tests serve it on a free port."""
    app = web.Application(middlewares=[_headers])
    app[READER_KEY] = reader
    app[REFRESH_KEY] = refresh_s
    app.router.add_get("/", _index)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/series", _series)
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_get("/api/alerts/{alert_id}", _alert)
    app.router.add_get("/api/posts", _posts)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    return app


def run(reader: DashboardReader, host: str, port: int, refresh_s: float, on_ready: Any = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    web.run_app(create_app(reader, refresh_s), host=host, port=port, print=on_ready, access_log=None,
                handle_signals=True)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # an unknown path or method: the API answers JSON there too
        if not request.path.startswith("/api/"):
            raise
        response = _error(exc.status, exc.reason)
    response.headers.update(_SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _config(request: web.Request) -> web.Response:
    reader = request.app[READER_KEY]
    return web.json_response({"refresh_s": request.app[REFRESH_KEY], "thin_below": reader.thin_below})


async def _series(request: web.Request) -> web.Response:
    q = request.query
    reader = request.app[READER_KEY]
    return await _answer(reader.series, since=q.get("since", "24h"), bucket=q.get("bucket", "hour"),
                         topic=q.get("topic") or None)


async def _alerts(request: web.Request) -> web.Response:
    q = request.query
    return await _answer(request.app[READER_KEY].alerts, since=q.get("since", "7d"), topic=q.get("topic") or None)


async def _alert(request: web.Request) -> web.Response:
    try:
        alert_id = int(request.match_info["alert_id"])
    except ValueError:
        return _error(400, "alert id must be an integer")
    if not 0 < alert_id < 2**63:
        return _error(400, "alert id out of range")
    return await _answer(request.app[READER_KEY].alert, alert_id, missing=f"no alert {alert_id}")


async def _posts(request: web.Request) -> web.Response:
    q = request.query
    topic = q.get("topic")
    if not topic:
        return _error(400, "topic is required")
    try:
        start, end = _instant(q.get("start", "")), _instant(q.get("end", ""))
    except ValueError as exc:
        return _error(400, str(exc))
    return await _answer(request.app[READER_KEY].posts, topic=topic, start=start, end=end)


def _instant(value: str) -> datetime:
    """An ISO-8601 time with its offset (a bare local time would be read in the server's zone)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"start and end must be ISO-8601 times, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"start and end need a UTC offset, got {value[:40]!r}")
    return moment


async def _answer(query: Any, *args: Any, missing: str | None = None, **kwargs: Any) -> web.Response:
    """Run a blocking query in a thread: its JSON, 400 for a bad request, 503 when the database fails."""
    try:
        result = await asyncio.to_thread(query, *args, **kwargs)
    except QueryError as exc:
        return _error(400, str(exc))
    except (DBAPIError, SQLAlchemyError) as exc:
        log.warning("dashboard query failed: %s", str(exc).splitlines()[0][:300])
        return _error(503, "the database did not answer; the page retries on its next refresh")
    if result is None:
        return _error(404, missing or "not found")
    return web.json_response(result)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
