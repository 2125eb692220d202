"""A demo "host app": a stand-in for an existing web application (the seed's Laravel site)
that embeds Longrun, on a second origin (``make run``: http://localhost:8090, while Longrun
is at http://127.0.0.1:8080 — another site, not only another port).

It does what such an app does (README "Embedding"):

- its own backend creates the request with its API key and the signed-in person's
  ``user_ref`` (``POST /api/requests``), and lists that person's requests
  (``GET /api/requests?user_ref=…``); the key never reaches a browser;
- its page shows ``<longrun-progress>`` with a viewer token its backend fetched for that page
  view (``POST /api/requests/{hash}/viewer-token``), under a strict CSP that allows only
  Longrun's origin for the script and the connections;
- its own script (``/host.js``) listens for the element's ``completed`` event and
  ``token-expired`` (reload: the backend mints a fresh token).

Run: ``python -m server.devtools.hostapp --port 8090 --longrun http://127.0.0.1:8080
--key-file .run/hostapp.key``. Tests build it with :func:`create_host_app`.
"""

from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from server.domain.i18n import RTL, ui

#: the signed-in person, as the host app names them (a real app takes it from its session)
DEMO_USER = "customer-1001"
SERVICE = "credit-score-rating"


@dataclass(frozen=True)
class HostConfig:
    longrun: str
    api_key: str
    user_ref: str = DEMO_USER


CONFIG: web.AppKey[HostConfig] = web.AppKey("host_config")
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("host_http")

HOST_CSS = """
:root { font-family: Georgia, 'Times New Roman', serif; background: #f6f1e7; color: #2b2118; }
body { margin: 0; }
header { background: #3d2b1f; color: #f6f1e7; padding: 14px 24px; display: flex; justify-content: space-between;
  align-items: baseline; flex-wrap: wrap; gap: 8px; }
header a { color: #f6f1e7; }
main { max-width: 640px; margin: 24px auto; padding: 0 16px; }
form.start { display: grid; gap: 10px; background: #fffaf0; padding: 16px; border-radius: 6px;
  border: 1px solid #e0d4bf; }
label { display: grid; gap: 4px; }
input { font: inherit; padding: 8px; }
button { font: inherit; padding: 10px; background: #8a4b2a; color: #fff; border: 0; border-radius: 6px; }
.saved { background: #e3f1e0; border: 1px solid #7fb36f; padding: 10px; border-radius: 6px; margin-top: 12px; }
.errors { color: #9b1c1c; }
/* The element, themed with its CSS custom properties. */
longrun-progress { --longrun-accent: #8a4b2a; --longrun-bg: #fffaf0; --longrun-border: #e0d4bf;
  --longrun-radius: 6px; --longrun-font: Georgia, 'Times New Roman', serif; --longrun-prompt-bg: #f8ecdc;
  margin-top: 12px; }
"""

HOST_ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#8a4b2a"/></svg>'
)

HOST_JS = """
'use strict';
document.querySelectorAll('longrun-progress').forEach(function (element) {
  const saved = document.getElementById('saved');
  element.addEventListener('completed', function (event) {
    const result = event.detail.result || {};
    saved.textContent = saved.dataset.template.replace('{score}', String(result.score));
    saved.hidden = false;
  });
  element.addEventListener('token-expired', function () { window.location.reload(); });
});
"""


def _csp(longrun: str) -> str:
    ws = URL(longrun).with_scheme("wss" if longrun.startswith("https") else "ws")
    origin = str(URL(longrun).origin())
    return (
        f"default-src 'self'; script-src 'self' {origin}; style-src 'self'; img-src 'self' data:; "
        f"connect-src {origin} {ws.origin()!s}; form-action 'self'; base-uri 'none'; object-src 'none'; "
        "frame-ancestors 'none'"
    )


def _lang(request: web.Request) -> str:
    return "fa" if request.query.get("lang") == "fa" else "en"


def _page(request: web.Request, body: str) -> web.Response:
    lang = _lang(request)
    config = request.app[CONFIG]
    e = html.escape
    other = "en" if lang == "fa" else "fa"
    page = f"""<!doctype html>
<html lang="{lang}" dir="{"rtl" if lang in RTL else "ltr"}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(ui("host_name", lang))}</title><link rel="stylesheet" href="/host.css">
<link rel="icon" href="/host.svg"></head>
<body><header><strong><a href="/?lang={lang}">{e(ui("host_name", lang))}</a></strong>
<span>{e(ui("host_signed_in", lang, user=config.user_ref))} ·
<a href="?lang={other}">{"English" if other == "en" else "فارسی"}</a></span></header>
<main>{body}</main>
<script src="{e(config.longrun)}/static/longrun-progress.js"></script><script src="/host.js"></script>
</body></html>"""
    return web.Response(
        text=page,
        content_type="text/html",
        headers={"Content-Security-Policy": _csp(config.longrun), "Referrer-Policy": "no-referrer"},
    )


async def _longrun(request: web.Request, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
    """The backend's call to Longrun, with the app's API key."""
    config = request.app[CONFIG]
    headers = {"Authorization": f"Bearer {config.api_key}", "Accept-Language": _lang(request)}
    try:
        async with request.app[HTTP].request(
            method, config.longrun + path, json=body, params=params or None, headers=headers
        ) as resp:
            return resp.status, await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 503, None


async def home(request: web.Request) -> web.Response:
    lang = _lang(request)
    e = html.escape
    status, listed = await _longrun(request, "GET", "/api/requests", user_ref=request.app[CONFIG].user_ref)
    items = listed.get("items", []) if status == 200 and isinstance(listed, dict) else []
    rows = "".join(
        f'<li><a href="/inquiries/{e(i["hash"])}?lang={lang}">{e(i.get("created_at") or "")}</a> '
        f"— {e(ui('status_' + str(i.get('status')), lang))}</li>"
        for i in items
    )
    down = "" if status == 200 else f'<p class="errors">{e(ui("host_down", lang))}</p>'
    body = f"""<h1>{e(ui("host_name", lang))}</h1><p>{e(ui("host_intro", lang))}</p>{down}
<form class="start" method="post" action="/inquiries?lang={lang}">
<label><span>{e(_field_label("national_id", lang))}</span>
<input name="national_id" inputmode="numeric" required value="0012345678" dir="ltr"></label>
<label><span>{e(_field_label("mobile", lang))}</span>
<input name="mobile" inputmode="tel" required value="09121234567" dir="ltr"></label>
<button type="submit">{e(ui("host_start", lang))}</button></form>
<h2>{e(ui("host_yours", lang))}</h2>{f"<ul>{rows}</ul>" if rows else f"<p>{e(ui('host_none', lang))}</p>"}"""
    return _page(request, body)


def _field_label(name: str, lang: str) -> str:
    from server.domain.catalog import get_service

    for f in get_service(SERVICE).fields:
        if f.name == name:
            return str(f.describe(lang)["label"])
    return name


async def start(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    data = {k: str(form.get(k, "")) for k in ("national_id", "mobile")}
    body = {"service": SERVICE, "data": data, "user_ref": request.app[CONFIG].user_ref, "viewer_can_cancel": True}
    status, made = await _longrun(request, "POST", "/api/requests", body)
    if status != 201 or not isinstance(made, dict):
        error = (made or {}).get("error", {}) if isinstance(made, dict) else {}
        fields = "".join(f"<li>{html.escape(str(v))}</li>" for v in (error.get("fields") or {}).values())
        message = html.escape(str(error.get("message") or ui("host_down", _lang(request))))
        return _page(request, f'<p class="errors">{message}</p><ul class="errors">{fields}</ul>')
    raise web.HTTPSeeOther(f"/inquiries/{made['hash']}?lang={_lang(request)}")


async def inquiry(request: web.Request) -> web.Response:
    """The page with the element: a viewer token fetched for this page view."""
    lang = _lang(request)
    h = request.match_info["hash"]
    e = html.escape
    status, minted = await _longrun(request, "POST", f"/api/requests/{h}/viewer-token", {"viewer_can_cancel": True})
    if status != 201 or not isinstance(minted, dict):
        raise web.HTTPNotFound(text=ui("e404_title", lang))
    config = request.app[CONFIG]
    body = f"""<p><a href="/?lang={lang}">{e(ui("host_back", lang))}</a></p>
<longrun-progress request="{e(h)}" token="{e(minted["viewer_token"])}"
  base="{e(config.longrun)}" lang="{lang}"></longrun-progress>
<p class="saved" id="saved" hidden data-template="{e(ui("host_saved", lang, score="{score}"))}"></p>"""
    return _page(request, body)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "host.css":
        return web.Response(text=HOST_CSS, content_type="text/css")
    if name == "host.svg":
        return web.Response(text=HOST_ICON, content_type="image/svg+xml")
    return web.Response(text=HOST_JS, content_type="application/javascript")


async def _http_ctx(app: web.Application) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        app[HTTP] = session
        yield


def create_host_app(config: HostConfig) -> web.Application:
    app = web.Application()
    app[CONFIG] = config
    app.cleanup_ctx.append(_http_ctx)
    app.router.add_get("/", home)
    app.router.add_post("/inquiries", start)
    app.router.add_get("/inquiries/{hash}", inquiry)
    app.router.add_get("/{name:host\\.(?:css|js|svg)}", asset)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--longrun", default="http://127.0.0.1:8080")
    parser.add_argument("--key-file", type=Path, required=True, help="a file holding the app's lrk_ key")
    args = parser.parse_args(argv)
    key = args.key_file.read_text().strip()
    web.run_app(
        create_host_app(HostConfig(longrun=args.longrun.rstrip("/"), api_key=key)),
        host="127.0.0.1",
        port=args.port,
        print=lambda _: print(f"demo host app on http://localhost:{args.port}/", flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
