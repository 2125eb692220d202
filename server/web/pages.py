"""The pages people use: catalog, form, progress, result, the demo phone, friendly errors.

Server-rendered with aiohttp-jinja2 (``templates/``), enhanced by plain scripts
(``static/``) and complete without them: every action is a form post (with the
session's CSRF token) that redirects back, and the progress page refreshes
itself. Pages follow the API's access rule (``server.web.access``): whoever may not
see a request gets the same friendly 404 as for one that never existed.

:func:`setup` wires all of it into an app: templates, static files, routes and
the error page the edge renders for :class:`ApiError` on page paths.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from server.domain.catalog import SERVICES, find_service
from server.domain.display import about, progress_view, result_rows, script_strings
from server.domain.errors import NotFound
from server.domain.i18n import LANGS
from server.domain.status import Status
from server.record import public_view
from server.requests.caller import check_hash
from server.web import access, csrf, forms
from server.web.rendering import (
    LANG_COOKIE,
    expected_seconds,
    page_lang,
    progress_url,
    render,
    see_other,
    setup_templates,
    static_url,
    take_flash,
)
from server.web.typedefs import SERVICE, SETTINGS, STORE

#: seconds the no-JS progress page waits before reloading itself
NOSCRIPT_REFRESH = 5

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    """Templates, static files, page routes, form posts and the friendly error page."""
    setup_templates(app)
    app.add_routes(routes)
    app.add_routes(forms.routes)


# --------------------------------------------------------------------------- catalog


@routes.get("/")
async def catalog(request: web.Request) -> web.Response:
    lang = page_lang(request)
    expected = await expected_seconds(request, SERVICES)
    services = [
        {
            "slug": s.slug,
            "title": s.title(lang),
            "summary": s.summary(lang),
            "about": about(round(expected[s.slug]), lang),
            "otp": s.may_ask_otp,
        }
        for s in SERVICES
    ]
    return render(request, "catalog.html", {"services": services}, lang=lang)


# --------------------------------------------------------------------------- progress and result


def script_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The public record minus what the script never needs (the person's own form data)."""
    return {k: v for k, v in public_view(record).items() if k not in ("request_data", "user_id")}


@routes.get("/requests/{hash}")
async def progress_page(request: web.Request) -> web.StreamResponse:
    h = check_hash(request.match_info["hash"])
    token = request.query.get("access_token")
    if token is not None:
        # A token link: let this browser session see the request, then drop the token from the URL.
        stored = await request.app[STORE].get(h)
        if stored is None or not access.token_matches(stored, token):
            raise NotFound()
        access.grant(await access.session(request), h)
        raise see_other(progress_url(h))
    record = await request.app[SERVICE].visible(await access.caller(request), h)
    pub = public_view(record)
    if pub["status"] == Status.COMPLETED.value:
        raise see_other(f"{progress_url(h)}/result")
    lang = page_lang(request)
    service = find_service(str(pub.get("service_slug", "")))
    view = progress_view(pub, service, lang)
    title = service.title(lang) if service is not None else str(pub.get("service_slug") or "")
    settings = request.app[SETTINGS]
    script = {
        "hash": h,
        "lang": lang,
        "ws_path": f"/ws/requests/{h}",
        "sse_path": f"/sse/requests/{h}",
        # an event stream sends a keepalive this often: three missed, the page calls it dead
        "heartbeat_ms": int(settings.socket_heartbeat * 1000),
        "api_url": f"/api/requests/{h}",
        "result_url": f"{progress_url(h)}/result",
        "server_now": int(time.time() * 1000),
        "service_title": title,
        "record": script_record(record),
        "steps": [{"name": s["name"], "label": s["label"]} for s in view["steps"]],
        "favicon_alert": static_url(request, "favicon-alert.svg"),
        **script_strings(lang),
    }
    context = {
        "h": h,
        "v": view,
        "title": title,
        "service_slug": service.slug if service is not None else None,
        "script": script,
        "csrf_field": csrf.FIELD,
        "csrf": await csrf.token(request),
        "flash": await take_flash(request, h, lang),
        "demo": settings.demo_mode,
        # Without JS, reload while something is moving; never while the person types a code.
        "head_refresh": NOSCRIPT_REFRESH if view["status"] in ("pending", "processing") else None,
    }
    return render(request, "progress.html", context, lang=lang)


def _seconds_between(start: Any, end: Any) -> float | None:
    try:
        a = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


@routes.get("/requests/{hash}/result")
async def result_page(request: web.Request) -> web.StreamResponse:
    h = check_hash(request.match_info["hash"])
    pub = public_view(await request.app[SERVICE].visible(await access.caller(request), h))
    if pub["status"] != Status.COMPLETED.value:
        raise see_other(progress_url(h))
    lang = page_lang(request)
    service = find_service(str(pub.get("service_slug", "")))
    took = _seconds_between(pub.get("created_at"), pub.get("finished_at"))
    context = {
        "h": h,
        "title": service.title(lang) if service is not None else str(pub.get("service_slug") or ""),
        "service_slug": service.slug if service is not None else None,
        "rows": result_rows(pub.get("result_data"), lang),
        "took": about(took, lang) if took is not None else "",
        "kept_minutes": max(1, request.app[SETTINGS].request_ttl // 60),
    }
    return render(request, "result.html", context, lang=lang)


# --------------------------------------------------------------------------- demo phone


async def fetch_outbox(bot_api_url: str, h: str) -> list[dict[str, str]] | None:
    """The demo bots' texts for a request, oldest first; None when the bots do not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(f"{bot_api_url}/demo/outbox", params={"requestHash": h}) as resp,
        ):
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    raw = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(raw, list):
        return None
    keys = ("to", "text", "code", "sent_at")
    return [{k: str(m.get(k) or "") for k in keys} for m in raw[-20:] if isinstance(m, dict)]


@routes.get("/demo/outbox/{hash}")
async def demo_outbox(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.demo_mode:
        raise NotFound("This page does not exist.")
    h = check_hash(request.match_info["hash"])
    await request.app[SERVICE].visible(await access.caller(request), h)
    messages = await fetch_outbox(settings.bot_api_url, h)
    for m in messages or []:
        m["time"] = m["sent_at"][11:16] if len(m["sent_at"]) >= 16 else ""
    context = {"h": h, "messages": messages, "head_refresh": 4}
    return render(request, "outbox.html", context)


# --------------------------------------------------------------------------- language and errors


def local_path(target: str) -> str:
    """``target`` if it is a path on this site, else ``/``.

    Browsers drop tabs and newlines inside URLs and read a backslash as a slash, so
    "/\t/evil.example" and "/\\evil.example" are other sites to them: any control
    character or backslash, or anything with a scheme or host, is refused."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    try:
        url = URL(target)
    except ValueError:
        return "/"
    return target if not url.scheme and not url.host else "/"


@routes.get("/lang/{lang}")
async def switch_language(request: web.Request) -> web.StreamResponse:
    lang = request.match_info["lang"]
    if lang not in LANGS:
        raise NotFound("This page does not exist.")
    target = local_path(request.query.get("next", "/"))
    resp = web.Response(status=303, headers={"Location": target})
    resp.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, path="/", samesite="Lax", httponly=True)
    return resp
