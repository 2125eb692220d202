"""History on the web: ``GET /api/history`` (JSON), the ``/history`` page and each stored result.

Everything is the current session's user's own: no session means an empty
history, and someone else's request answers the same 404 as one that never
existed. The JSON and the page read one indexed partition through
``server.history.queries``; PostgreSQL down answers 503 (``Database.connection``).

Also :func:`db_ctx`, the app's ``cleanup_ctx`` for the PostgreSQL pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
from aiohttp import web

from server.domain.catalog import SERVICES, find_service
from server.domain.display import about, error_text, result_rows
from server.domain.errors import ConfigError, NotFound, ValidationFailed
from server.domain.i18n import Text, local_digits, ui
from server.history import queries as history
from server.history.db import DB_DOWN, Database, make_pool, migrate
from server.history.queries import HistoryQuery
from server.requests.caller import USER_REF_RE, app_user_id, check_hash
from server.web import access
from server.web.rendering import page_lang, render, see_other
from server.web.typedefs import DB, SETTINGS

log = logging.getLogger("longrun.history")
routes = web.RouteTableDef()

TEXT: dict[str, Text] = {
    "title": Text("Your past requests", "درخواست‌های پیشین شما"),
    "intro": Text(
        "Requests you made in this browser, newest first.",
        "درخواست‌هایی که در این مرورگر ثبت کرده‌اید، از جدید به قدیم.",
    ),
    "empty": Text("Nothing here yet.", "هنوز چیزی اینجا نیست."),
    "off": Text("History is not kept on this server.", "این سرور سابقه درخواست‌ها را نگه نمی‌دارد."),
    "service": Text("Service", "خدمت"),
    "status": Text("Status", "وضعیت"),
    "all": Text("All", "همه"),
    "filter": Text("Show", "نمایش"),
    "finished": Text("Finished", "پایان"),
    "took": Text("Took", "مدت"),
    "older": Text("Older requests", "درخواست‌های قدیمی‌تر"),
    "first": Text("Newest requests", "جدیدترین درخواست‌ها"),
    "open": Text("Open", "مشاهده"),
    "back": Text("All past requests", "همه درخواست‌های پیشین"),
    "request": Text("What you asked", "آنچه درخواست کردید"),
    "result": Text("Result", "نتیجه"),
    "error": Text("What went wrong", "چه مشکلی پیش آمد"),
    "steps": Text("Steps", "مراحل"),
    "waited": Text("Waiting for you", "در انتظار شما"),
    "attempts": Text("Attempts", "تلاش‌ها"),
    "no_result": Text("No result was stored.", "نتیجه‌ای ذخیره نشده است."),
}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _links(item: dict[str, Any]) -> dict[str, Any]:
    h = item["hash"]
    return {**item, "url": f"/history/{h}", "api_url": f"/api/history/{h}"}


async def history_user(request: web.Request) -> str | None:
    """Whose history: the session's user; for an application's backend (its API key), the
    person its ``user_ref`` names (required then: the archive is partitioned by person, and
    the user id is derived from app and reference, so no other app's rows can match).
    ``user_ref`` without a key is refused."""
    ref = request.query.get("user_ref")
    if access.bearer_token(request) is not None:
        who = await access.caller(request)
        if who.app_key is not None:
            if ref is None or not USER_REF_RE.fullmatch(ref):
                raise ValidationFailed(
                    "Name the person: user_ref.", fields={"user_ref": "1 to 128 letters, digits or . _ : @ + -"}
                )
            return app_user_id(who.app_key.app, ref)
    if ref is not None:
        raise ValidationFailed(
            "user_ref is for an application's API key.", fields={"user_ref": "Only with an API key."}
        )
    return await access.user_id(request, create=False)


async def _page(request: web.Request) -> tuple[history.Page, HistoryQuery, bool]:
    """The page the query asks for; empty without a session or without an archive."""
    uid = await history_user(request)
    q = HistoryQuery.from_params(uid or "", request.query)
    database = request.app.get(DB)
    if uid is None or database is None:
        return history.Page([], None), q, database is not None
    async with database.connection() as conn:
        return await history.page(conn, q), q, True


async def _entry(request: web.Request) -> dict[str, Any]:
    h = check_hash(request.match_info["hash"])
    database = request.app.get(DB)
    if database is None:
        raise NotFound()
    uid = await history_user(request)
    if uid is None:
        raise NotFound()
    async with database.connection() as conn:
        item = await history.entry(conn, uid, h)
    if item is None:
        raise NotFound()
    return _links(item)


# --------------------------------------------------------------------------- JSON


@routes.get("/api/history")
async def api_history(request: web.Request) -> web.Response:
    """``{"items": [...], "next_cursor": str | null, "enabled": bool}``; filters ``service``,
    ``status``; ``limit`` 1-100 (20); ``cursor`` from the previous page."""
    page, _, enabled = await _page(request)
    body = page.as_dict()
    body["items"] = [_links(i) for i in page.items]
    body["enabled"] = enabled
    return _json(body)


@routes.get("/api/history/{hash}")
async def api_history_entry(request: web.Request) -> web.Response:
    return _json(await _entry(request))


# --------------------------------------------------------------------------- pages


def _when(iso: str | None, lang: str) -> str:
    return local_digits(iso[:16].replace("T", " ") + " UTC", lang) if iso else ""


def _row(item: dict[str, Any], lang: str) -> dict[str, Any]:
    service = find_service(str(item.get("service_slug")))
    status = str(item.get("status"))
    duration = item.get("duration")
    return {
        "hash": item["hash"],
        "url": f"/history/{item['hash']}",
        "service": service.title(lang) if service is not None else str(item.get("service_slug")),
        "status": status,
        "status_label": ui(f"status_{status}", lang),
        "finished": _when(item.get("finished_at"), lang),
        "took": about(float(duration), lang) if isinstance(duration, int | float) else "",
        "error": error_text(str(item.get("error") or ""), lang),  # ours in the reader's language
    }


@routes.get("/history")
async def history_page(request: web.Request) -> web.Response:
    lang = page_lang(request)
    try:
        page, q, enabled = await _page(request)
    except ValidationFailed:
        # A link gone stale or mistyped (a cursor, a filter): the first page. An error page's
        # "try again" would only send the same link again.
        raise see_other("/history") from None
    filters = {k: v for k, v in (("service", q.service), ("status", q.status)) if v}
    context = {
        "s": {k: t(lang) for k, t in TEXT.items()},
        "mode": "list",
        "enabled": enabled,
        "rows": [_row(i, lang) for i in page.items],
        "services": [{"slug": s.slug, "title": s.title(lang)} for s in SERVICES],
        "statuses": [{"value": v, "label": ui(f"status_{v}", lang)} for v in history.STATUSES],
        "selected": {"service": q.service or "", "status": q.status or ""},
        "older_url": f"/history?{urlencode({**filters, 'cursor': page.next_cursor})}" if page.next_cursor else None,
        "first_url": f"/history?{urlencode(filters)}" if q.after is not None else None,
    }
    return render(request, "history.html", context, lang=lang)


@routes.get("/history/{hash}")
async def history_entry_page(request: web.Request) -> web.Response:
    lang = page_lang(request)
    item = await _entry(request)
    service = find_service(str(item.get("service_slug")))
    raw_steps = item.get("steps")
    steps: dict[str, Any] = raw_steps if isinstance(raw_steps, dict) else {}
    # jsonb keeps no key order: show the service's steps in its own order, unknown ones after.
    order = {s.name: i for i, s in enumerate(service.steps)} if service is not None else {}
    steps = dict(sorted(steps.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    raw_request = item.get("request_data")
    request_data: dict[str, Any] = raw_request if isinstance(raw_request, dict) else {}
    context = {
        "s": {k: t(lang) for k, t in TEXT.items()},
        "mode": "entry",
        "enabled": True,
        "row": _row(item, lang),
        "request_rows": result_rows(request_data, lang),
        "result_rows": result_rows(item.get("result_data"), lang),
        "steps": [
            {"label": service.step_label(name, lang) if service is not None else name, "took": about(sec, lang)}
            for name, sec in steps.items()
            if isinstance(sec, int | float)
        ],
        "waited": about(float(item["waited"]), lang) if item.get("waited") else "",
        "attempts": local_digits(item.get("attempts") or 1, lang),
    }
    return render(request, "history.html", context, lang=lang)


# --------------------------------------------------------------------------- the pool


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool and the migrations, applied at start-up (retried in the background
    while PostgreSQL is down, so live requests never wait for the archive)."""
    pool = make_pool(app[SETTINGS])
    await pool.open(wait=False)
    database = Database(pool, app[SETTINGS])
    app[DB] = database
    migrating: asyncio.Task[None] | None = None
    try:
        # Usually well under a second; never hold up start-up for long on a dead database.
        async with asyncio.timeout(5.0):
            await migrate(app[SETTINGS])
        database.ready.set()
    except DB_DOWN as exc:
        log.warning("postgresql not reachable at start-up (%s): history is unavailable until it is", exc)
        migrating = asyncio.create_task(database.keep_migrating())
    except (psycopg.Error, ConfigError):
        log.exception("migrations failed; history stays unavailable until this is fixed")
    yield
    if migrating is not None:
        migrating.cancel()
        with suppress(asyncio.CancelledError):
            await migrating
    await pool.close(timeout=5.0)
