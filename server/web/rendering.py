"""How pages are rendered: the Jinja templates and static files, the person's language, the
flash message a no-JS action leaves for the next view, and the friendly error page.

:func:`setup_templates` wires templates and static files into an app; the page
handlers (``server.web.pages``, ``server.web.forms``) render through :func:`render`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server.domain.catalog import Service
from server.domain.errors import ApiError, RateLimited, ValidationFailed
from server.domain.i18n import LANGS, RTL, pick_lang, ui
from server.history import estimates
from server.web import access
from server.web.typedefs import ERROR_PAGE, STORE

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
LANG_COOKIE = "lang"


def setup_templates(app: web.Application) -> None:
    """Templates, static files (versioned URLs) and the friendly error page."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    app.router.add_static("/static/", STATIC, name="static", append_version=True)
    versions: dict[str, str] = {}

    def static(name: str) -> str:
        # append_version hashes the file on every call: hash each file once per process.
        if name not in versions:
            versions[name] = str(app.router["static"].url_for(filename=name))
        return versions[name]

    env.globals["static"] = static
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
    session = await access.session(request)
    session["flash"] = {"h": h, "key": key, "params": params}


async def take_flash(request: web.Request, h: str, lang: str) -> str:
    if not request.cookies:
        return ""
    session = await access.session(request)
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
        "err_otp_wrong_length",
        "err_input_pending",
        "err_not_waiting_for_input",
        "err_input_attempts_exhausted",
        "err_input_invalid",
        "err_prompt_expired",
        "err_rate_limited",
    }
)


def error_key(err: ApiError) -> str:
    """The page string for an action's error code."""
    if isinstance(err, ValidationFailed):
        key = "err_input_invalid" if "value" in err.fields else "err_otp_invalid"
    else:
        key = f"err_{err.code}"
    return key if key in _FLASH_KEYS else "err_rate_limited" if isinstance(err, RateLimited) else "err_generic"


async def expected_seconds(request: web.Request, services: Sequence[Service]) -> dict[str, float]:
    """Each service's expected duration as ``GET /api/services`` gives it: learned from recent
    completions, else the catalog's (also when Redis does not answer)."""
    store = request.app[STORE]
    return await estimates.estimated_durations(store.redis, store.keys, services)


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
