"""The pages people use: catalog, form, progress, result, the demo phone, friendly errors.

Server-rendered with aiohttp-jinja2 (``templates/``), enhanced by plain scripts
(``static/``) and complete without them: every action is a form post (with the
session's CSRF token) that redirects back, and the progress page refreshes
itself. Pages follow the API's access rule (``server.web.access``): whoever may not
see a request gets the same friendly 404 as for one that never existed.

:func:`setup` wires all of it into an app: templates, static files, routes and
the error page the middleware renders for :class:`ApiError` on page paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session
from yarl import URL

from server.domain.catalog import SERVICES, Service, find_service, get_service
from server.domain.display import about, progress_view, result_rows, script_strings
from server.domain.errors import ApiError, Conflict, NotFound, RateLimited, ValidationFailed
from server.domain.i18n import LANGS, RTL, pick_lang, ui
from server.domain.status import Status
from server.history import estimates
from server.record import public_view
from server.web import access, api, csrf
from server.web.middleware import ERROR_PAGE
from server.web.typedefs import SETTINGS, STORE

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
LANG_COOKIE = "lang"
#: seconds the no-JS progress page waits before reloading itself
NOSCRIPT_REFRESH = 5

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    """Templates, static files, page routes and the friendly error page."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    versions: dict[str, str] = {}

    def static(name: str) -> str:
        # append_version hashes the file on every call: hash each file once per process.
        if name not in versions:
            versions[name] = str(app.router["static"].url_for(filename=name))
        return versions[name]

    env.globals["static"] = static
    app.add_routes(routes)
    app[ERROR_PAGE] = error_page


# --------------------------------------------------------------------------- helpers


def static_url(request: web.Request, name: str) -> str:
    """A file under static/ with its version (the templates' ``static()``)."""
    static = cast(Callable[[str], str], aiohttp_jinja2.get_env(request.app).globals["static"])
    return static(name)


def page_lang(request: web.Request) -> str:
    return pick_lang(request.headers.get("Accept-Language"), request.cookies.get(LANG_COOKIE))


def translator(lang: str) -> Callable[..., str]:
    def t(key: str, **params: object) -> str:
        return ui(key, lang, **params)

    return t


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200, lang: str | None = None
) -> web.Response:
    lang = lang or page_lang(request)
    here = request.rel_url.path_qs if request.method == "GET" else request.rel_url.path
    base = {
        "lang": lang,
        "dir": "rtl" if lang in RTL else "ltr",
        "t": translator(lang),
        "here": here,
        "langs": LANGS,
        "head_refresh": None,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def progress_url(h: str) -> str:
    return f"/requests/{h}"


async def set_flash(request: web.Request, h: str, key: str, **params: object) -> None:
    """A message for the next view of this request's page (no-JS actions redirect back)."""
    session = await get_session(request)
    session["flash"] = {"h": h, "key": key, "params": params}


async def take_flash(request: web.Request, h: str, lang: str) -> str:
    if not request.cookies:
        return ""
    session = await get_session(request)
    flash = session.get("flash")
    if not isinstance(flash, dict) or flash.get("h") != h:
        return ""
    del session["flash"]
    key = flash.get("key")
    raw = flash.get("params")
    params: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return ui(key, lang, **params) if isinstance(key, str) and key in _FLASH_KEYS else ""


_FLASH_KEYS = frozenset(
    {
        "resent",
        "err_otp_pending",
        "err_not_waiting_for_otp",
        "err_otp_attempts_exhausted",
        "err_resend_too_early",
        "err_resend_exhausted",
        "err_already_finished",
        "err_otp_invalid",
        "err_rate_limited",
    }
)


def error_key(err: ApiError) -> str:
    """The page string for an action's error code."""
    key = "err_otp_invalid" if isinstance(err, ValidationFailed) else f"err_{err.code}"
    return key if key in _FLASH_KEYS else "err_rate_limited" if isinstance(err, RateLimited) else "err_generic"


# --------------------------------------------------------------------------- catalog and form


async def expected_seconds(request: web.Request, services: Sequence[Service]) -> dict[str, float]:
    """Each service's expected duration as ``GET /api/services`` gives it: learned from recent
    completions, else the catalog's (also when Redis does not answer)."""
    store = request.app[STORE]
    return await estimates.estimated_durations(store.redis, store.keys, services)


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


def form_fields(
    service: Service, lang: str, values: Mapping[str, str], errors: Mapping[str, str]
) -> list[dict[str, Any]]:
    fields = []
    for f in service.fields:
        numeric = f.digits or f.type == "number"
        fields.append(
            {
                "name": f.name,
                "label": f.label(lang),
                "type": f.type,
                "input_type": "tel" if f.type == "tel" else "text",
                "required": f.required,
                "value": values.get(f.name, ""),
                "error": errors.get(f.name, ""),
                "example": ui("example", lang, example=f.placeholder) if f.placeholder else "",
                "placeholder": f.placeholder,
                "inputmode": "numeric" if numeric else ("tel" if f.type == "tel" else None),
                "autocomplete": f.autocomplete,
                "maxlength": f.max_length,
                "ltr": numeric or f.type == "tel" or f.pattern is not None,
                "choices": [(v, t(lang)) for v, t in f.choices],
            }
        )
    return fields


async def render_form(
    request: web.Request,
    service: Service,
    lang: str,
    token: str,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    banner: str = "",
    status: int = 200,
) -> web.Response:
    context = {
        "service": {"slug": service.slug, "title": service.title(lang), "summary": service.summary(lang)},
        "about": about(round((await expected_seconds(request, [service]))[service.slug]), lang),
        "needs_code": service.may_ask_otp,
        "fields": form_fields(service, lang, values or {}, errors or {}),
        "csrf_field": csrf.FIELD,
        "csrf": token,
        "banner": banner or (ui("form_errors", lang) if errors else ""),
    }
    return render(request, "form.html", context, status=status, lang=lang)


@routes.get("/services/{slug}")
async def service_form(request: web.Request) -> web.Response:
    service = get_service(request.match_info["slug"])
    lang = page_lang(request)
    return await render_form(request, service, lang, await csrf.token(request))


@routes.post("/services/{slug}")
async def start_request(request: web.Request) -> web.StreamResponse:
    """The form's post: validated and created by the API's own code, then 303 to the progress page."""
    service = get_service(request.match_info["slug"])
    form = await request.post()
    await csrf.verify(request, form)
    lang = page_lang(request)
    values = {f.name: v for f in service.fields if isinstance(v := form.get(f.name), str)}
    token = await csrf.token(request)
    try:
        record, _ = await api.create_request(request, service.slug, values, lang=lang)
    except ValidationFailed as err:
        return await render_form(request, service, lang, token, values=values, errors=err.fields, status=422)
    except RateLimited as err:
        banner = ui("form_rate_limited", lang, seconds=err.retry_after)
        resp = await render_form(request, service, lang, token, values=values, banner=banner, status=429)
        resp.headers["Retry-After"] = str(err.retry_after)
        return resp
    raise see_other(progress_url(record["hash"]))


# --------------------------------------------------------------------------- progress and result


def script_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The public record minus what the script never needs (the person's own form data)."""
    return {k: v for k, v in public_view(record).items() if k not in ("request_data", "user_id")}


@routes.get("/requests/{hash}")
async def progress_page(request: web.Request) -> web.StreamResponse:
    h = access.check_hash(request.match_info["hash"])
    token = request.query.get("access_token")
    if token is not None:
        # A token link: let this browser session see the request, then drop the token from the URL.
        stored = await request.app[STORE].get(h)
        if stored is None or not access.token_matches(stored, token):
            raise NotFound()
        access.grant(await get_session(request), h)
        raise see_other(progress_url(h))
    record = await api.load_visible(request, h)
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
    h = access.check_hash(request.match_info["hash"])
    pub = public_view(await api.load_visible(request, h))
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


# --------------------------------------------------------------------------- no-JS actions


async def _action(request: web.Request, kind: str) -> web.StreamResponse:
    h = access.check_hash(request.match_info["hash"])
    form = await request.post()
    await csrf.verify(request, form)
    try:
        if kind == "otp":
            await api.submit_otp(request, h, form.get("otp", ""))
        elif kind == "resend":
            await api.resend_otp(request, h)
            await set_flash(request, h, "resent")
        else:
            await api.cancel(request, h)
    except (Conflict, ValidationFailed, RateLimited) as err:
        params = {"seconds": err.retry_after} if isinstance(err, RateLimited) else {}
        await set_flash(request, h, error_key(err), **params)
    raise see_other(progress_url(h))


@routes.post("/requests/{hash}/otp")
async def otp_form(request: web.Request) -> web.StreamResponse:
    return await _action(request, "otp")


@routes.post("/requests/{hash}/resend-otp")
async def resend_form(request: web.Request) -> web.StreamResponse:
    return await _action(request, "resend")


@routes.post("/requests/{hash}/cancel")
async def cancel_form(request: web.Request) -> web.StreamResponse:
    return await _action(request, "cancel")


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
    h = access.check_hash(request.match_info["hash"])
    await api.load_visible(request, h)
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


async def error_page(request: web.Request, err: ApiError) -> web.StreamResponse:
    """ERROR_PAGE: the friendly page for an :class:`ApiError` on a page path (no stack trace)."""
    lang = page_lang(request)
    new_request = False
    retry = False
    if err.status == 404:
        about_request = request.path.startswith(("/requests/", "/demo/outbox/"))
        title, text = ui("e404_title", lang), ui("e404_request" if about_request else "e404_page", lang)
        new_request = True
    elif err.status == 403:
        title, text = ui("e403_title", lang), ui("e403_text", lang)
        new_request = True
    elif isinstance(err, RateLimited):
        title, text = ui("e429_title", lang), ui("e429_text", lang, seconds=err.retry_after)
        retry = True
    elif err.status == 503:
        title, text = ui("e503_title", lang), ui("e503_text", lang)
        retry = True
    else:
        title, text = ui("e_title", lang), ui("e_text", lang)
        retry = True
    context = {"title": title, "text": text, "new_request": new_request, "retry": retry, "status": err.status}
    resp = render(request, "error.html", context, status=err.status, lang=lang)
    if isinstance(err, RateLimited):
        resp.headers["Retry-After"] = str(err.retry_after)
    return resp
