"""What ``static/longrun-progress.js`` (the ``<longrun-progress>`` element) asks of the server
besides the request itself: the words it shows, in the reader's language.

``GET /api/embed/strings?lang=en|fa``: the page strings and record messages the progress page
uses (``display.script_strings``, so there is one text per key, translated once), the result
labels, each service's title and steps, and the server's clock (the element counts the time
left down between updates). Open to ``EMBED_ORIGINS`` (``server.web.cors``); it holds nothing
about anyone, so it needs no credential and may be cached.
"""

from __future__ import annotations

import time

from aiohttp import web

from server.domain.catalog import SERVICES
from server.domain.display import script_strings
from server.domain.errors import ValidationFailed
from server.domain.i18n import LANGS, RESULT_LABELS, RTL, pick_lang
from server.web.api import json_response

routes = web.RouteTableDef()


@routes.get("/api/embed/strings")
async def embed_strings(request: web.Request) -> web.Response:
    asked = request.query.get("lang")
    if asked is not None and asked not in LANGS:
        raise ValidationFailed("Unknown language.", fields={"lang": " or ".join(LANGS)})
    lang = asked or pick_lang(request.headers.get("Accept-Language"))
    body = {
        "lang": lang,
        "dir": "rtl" if lang in RTL else "ltr",
        "server_now": int(time.time() * 1000),
        **script_strings(lang),
        "labels": {k: text(lang) for k, text in RESULT_LABELS.items()},
        "services": {
            s.slug: {"title": s.title(lang), "steps": [{"name": st.name, "label": st.label(lang)} for st in s.steps]}
            for s in SERVICES
        },
    }
    # Short: the server's clock rides along; long enough that a page of many elements asks once.
    return json_response(body, headers={"Cache-Control": "public, max-age=60", "Vary": "Accept-Language, Origin"})
