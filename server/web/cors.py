"""CORS for pages that embed ``<longrun-progress>`` (``EMBED_ORIGINS``).

Only what the element calls is opened to those origins: reading one request and answering
it (``GET /api/requests/{hash}``, its ``otp``/``resend-otp``/``cancel``/``input`` posts, the
event stream) and the element's script. Creating and listing requests stay closed: an API
key belongs in the application's backend, never in a browser. Credentials are never allowed
(no ``Access-Control-Allow-Credentials``): the element sends its viewer token as a bearer
header, so the session cookie plays no part and a foreign page cannot borrow it.
"""

from __future__ import annotations

import re

from aiohttp import web

from server.web.access import embed_origin

#: paths an embedding page may call across origins
EMBEDDABLE = re.compile(
    r"/api/requests/req_[^/]+(?:/(?:otp|resend-otp|cancel|input))?|/sse/requests/[^/]+"
    r"|/api/embed/strings|/static/longrun-progress\.js"
)
#: seconds a browser may keep a preflight's answer
MAX_AGE = "600"

preflight_routes = web.RouteTableDef()


def _allow(request: web.Request, response: web.StreamResponse) -> None:
    vary = response.headers.get("Vary", "")
    if "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
    origin = embed_origin(request)
    if origin is not None and EMBEDDABLE.fullmatch(request.path):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"


@preflight_routes.route("OPTIONS", "/api/requests/{hash}")
@preflight_routes.route("OPTIONS", "/api/requests/{hash}/{action}")
@preflight_routes.route("OPTIONS", "/sse/requests/{hash}")
async def preflight(request: web.Request) -> web.Response:
    """A browser asks whether an embedding page may call: yes for EMBED_ORIGINS (no CORS
    headers otherwise, which the browser takes as a no)."""
    response = web.Response(status=204)
    if embed_origin(request) is not None and EMBEDDABLE.fullmatch(request.path):
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
        response.headers["Access-Control-Max-Age"] = MAX_AGE
    return response


def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The CORS headers of an embeddable path (errors included: the element must read a 401 or
    429 to say why); called by the edge's response hook when the request has an ``Origin``."""
    if EMBEDDABLE.fullmatch(request.path):
        _allow(request, response)
