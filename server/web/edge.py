"""The edge: what every answer goes through on its way out, wrapped around each handler.

:func:`install`, called last by the app factory, wraps every route the app has registered
(its own, the setup functions', the static files', ``/metrics``) in :func:`wrap` and adds
one route of last resort, :func:`unmatched`. No aiohttp middleware and no
``on_response_prepare`` hook: each of those costs every request a layer (README, "Why the
missed targets are missed"), where a wrapper made once per route costs one call.

What the wrapper does for each request:

- refuses cross-site writes (:func:`refuse_cross_site`);
- saves the session a handler changed (aiohttp-session's middleware, folded in);
- maps errors to answers: :class:`ApiError` to its status, a Redis outage to 503, aiohttp's
  HTTP errors on API paths to the same JSON body (``{"error": {"code", "message",
  "fields"?}}``), a 404 on a page path to the friendly page, anything else to aiohttp's own
  500 — pages never show a stack trace;
- sets the security headers (:func:`add_headers`) on the answer it returns or that was
  raised. An answer a handler prepares itself (an event stream) is sent before the wrapper
  sees it: that handler calls :func:`add_headers` before ``prepare``. A WebSocket upgrade
  (101) carries none;
- counts the request and writes its access line (``server.web.metrics``), under the
  route's template, known when the route is wrapped.

Unmatched paths (404) and wrong methods (405) reach :func:`unmatched`, a catch-all route
registered last, so they get the same answers, counts (route ``other``) and log lines.

What aiohttp answers before any route runs does not pass the edge: a 417 for an unknown
``Expect`` header, and a request target that is not a path (``OPTIONS *``). A static
file's status (304, 206, 404) is set only while aiohttp prepares it, after the handler:
it is counted then (:func:`_count_when_prepared`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.domain.errors import ApiError, Forbidden, NotFound, RateLimited, Unavailable
from server.web import access, metrics
from server.web.cors import cors_headers
from server.web.typedefs import ERROR_PAGE

log = logging.getLogger("longrun.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: a handler with the edge around it (a coroutine function, as aiohttp's routes hold them)
Edged = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def wants_json(request: web.Request) -> bool:
    path = request.path
    return path.startswith(("/api/", "/ws/", "/sse/")) or path in ("/metrics", "/healthz", "/readyz")


def json_error(err: ApiError) -> web.Response:
    headers = {}
    if isinstance(err, RateLimited):
        headers["Retry-After"] = str(err.retry_after)
    return web.Response(
        body=orjson.dumps(err.body()), status=err.status, content_type="application/json", headers=headers
    )


async def _answer(request: web.Request, err: ApiError) -> web.StreamResponse:
    page = request.app.get(ERROR_PAGE)
    if wants_json(request) or page is None:
        return json_error(err)
    return await page(request, err)


_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _form_with_token(request: web.Request) -> bool:
    # The pages' form posts are judged by their CSRF token (server.web.csrf), which old browsers
    # sending "Origin: null" can still present. The API takes no form: a form-encoded call
    # to it is judged like any other.
    return not request.path.startswith("/api/") and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    )


def refuse_cross_site(request: web.Request) -> None:
    """Refuse state-changing calls a browser says come from another site.

    Cookies ride along with cross-site requests (SameSite=Lax stops only some), so every
    unsafe call made with the session cookie must come from our own pages: forms also carry
    a CSRF token, and JSON calls — which need no token — are checked here by Origin and
    Sec-Fetch-Site. Calls with a bearer token or a bot signature carry no ambient authority
    and are not affected; neither are clients that send no Origin (not browsers).
    """
    if (
        request.method in _UNSAFE
        and "Authorization" not in request.headers
        and not request.path.startswith("/api/bot/")
        and not _form_with_token(request)
        and access.cross_site(request)
    ):
        raise Forbidden("Requests from other sites are refused.", code="cross_site")


#: the mark of a handler behind the edge (checked at start-up)
_EDGED = "__longrun_edge__"


def wrap(handler: Handler, route: str) -> Edged:
    """``handler`` behind the edge; ``route`` names it in the metrics and the access log (its
    template, never the raw path, which holds a request hash)."""

    @functools.wraps(handler)
    async def edged(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        counted_later = False
        try:
            try:
                if request.method in _UNSAFE:
                    refuse_cross_site(request)
                response = await handler(request)
            except web.HTTPException as exc:
                await access.save_session(request, exc)  # a redirect carries the session it changed
                response = await _recover(request, exc, route)
            except (ApiError, RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
                response = await _recover(request, exc, route)
            except Exception as exc:
                response = _crashed(request, exc)
            else:
                await access.save_session(request, response)
            status = response.status
            if not response.prepared:  # a stream or a socket was sent already, see add_headers
                add_headers(request, response)
                if isinstance(response, web.FileResponse):
                    _count_when_prepared(response, request.method, route, started)
                    counted_later = True
            return response
        except web.HTTPException as exc:  # an answer aiohttp sends as it is (a redirect, a 405 page)
            status = exc.status
            add_headers(request, exc)
            raise
        except Exception as exc:  # the edge's own step failed (the error page, the session's save)
            response = _crashed(request, exc)
            status = response.status
            add_headers(request, response)
            return response
        finally:
            if not counted_later:
                metrics.observe(request.method, route, status, time.perf_counter() - started)

    setattr(edged, _EDGED, True)
    return edged


def _count_when_prepared(response: web.FileResponse, method: str, route: str, started: float) -> None:
    """Count a static file once aiohttp has prepared it: only then is its status known (304
    for a cached file, 206 for a range, 404 for a missing one; 200 until then)."""
    prepare = response.prepare

    async def prepare_and_count(request: web.BaseRequest) -> Any:
        status = 500
        try:
            writer = await prepare(request)
            status = response.status
            return writer
        finally:
            metrics.observe(method, route, status, time.perf_counter() - started)

    response.prepare = prepare_and_count  # type: ignore[method-assign]


async def _recover(request: web.Request, exc: Exception, route: str) -> web.StreamResponse:
    """The answer for what a handler raised, or ``exc`` again (an answer aiohttp gives as is)."""
    if isinstance(exc, ApiError):
        return await _answer(request, exc)
    if isinstance(exc, ConnectionResetError):
        raise exc  # the client went away (redis-py wraps its own resets): no 503 for it, a bug's 500
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionError):
        log.warning("redis unavailable on %s %s: %s", request.method, route, exc.__class__.__name__)
        return await _answer(
            request, Unavailable("The service is temporarily unavailable. Please try again in a moment.")
        )
    if isinstance(exc, web.HTTPException):
        if exc.status >= 400 and wants_json(request):
            code = _HTTP_CODES.get(exc.status, "error")
            message = exc.reason
            if exc.status == 413:
                message = "The body is larger than allowed (64 KiB for the API)."
            mapped = ApiError(message, code=code)
            mapped.status = exc.status
            response = json_error(mapped)
            for name in ("Allow", "Retry-After"):  # e.g. 405 must say which methods are allowed
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        if exc.status == 404 and request.app.get(ERROR_PAGE) is not None:
            return await _answer(request, NotFound("This page does not exist."))
    raise exc


def _crashed(request: web.Request, exc: Exception) -> web.StreamResponse:
    """A bug's answer: aiohttp's own 500 (504 for a timeout), logged as aiohttp logs it, made
    here so that it too carries the security headers."""
    if request.writer.output_size:
        raise exc  # an answer already went out: aiohttp closes the connection
    if isinstance(exc, TimeoutError):
        return request.protocol.handle_error(request, 504)
    return request.protocol.handle_error(request, 500, exc)


def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The security headers every answer carries and, for a page that embeds us, the CORS
    headers. The edge sets them on the answer a handler returns or raises; a handler that
    prepares its own answer (an event stream) calls this before ``prepare``. Not on a
    WebSocket upgrade: its headers would stay in memory for the socket's whole life and mean
    nothing there (``WebSocketResponse.prepare`` sends the 101 itself, and the edge sees it
    prepared).

    The HTML-only headers go by the ``Content-Type`` already set: a static file's is set only
    when it is prepared, so ``static/`` holds no HTML (``tests/test_edge.py`` checks)."""
    if response.status == 101:
        return
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if headers.get("Content-Type", "").startswith("text/html"):
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cache-Control", "no-store")
    if "Origin" in request.headers:
        cors_headers(request, response)


#: the route of last resort matches any path (``[\s\S]``: a decoded path may hold a newline)
UNMATCHED_PATH = r"/{path:[\s\S]*}"
#: unmatched paths' name in the metrics and the access log
UNMATCHED_ROUTE = "other"


async def unmatched(request: web.Request) -> web.StreamResponse:
    """What no other route answers: 405 with ``Allow`` when a route has the path but not the
    method, 404 otherwise (the answers aiohttp's router gives, raised here so that the edge
    maps, counts and logs them). aiohttp stopped at the first route that matched, so the
    methods are gathered again, from every route but this one: only an unmatched request
    pays for it."""
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            match, methods = await resource.resolve(request)
            if match is None:  # one that matched was registered after this one: see install
                allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def install(app: web.Application) -> None:
    """Put the edge around every route ``app`` has: called last by the app factory, after
    every route is registered. A route added later would miss the edge and come after the
    route of last resort, which would answer for it: at start-up (the router frozen by
    then) :func:`_check` refuses to serve such an app.

    One loop over the router reaches every route, whoever registered it: the static files'
    routes too, which aiohttp makes itself and which no wrapper could be handed at
    registration. aiohttp has no public way to replace a route's handler, so ``_handler``
    is set, and checked: an aiohttp that renamed it fails here, at start-up, rather than
    answering without the edge (so does one without ``RequestHandler.handle_error``, which
    :func:`_crashed` calls)."""
    if any(getattr(route.handler, _EDGED, False) for route in app.router.routes()):
        raise RuntimeError("the edge is installed once per app (twice would count every request twice)")
    if not callable(getattr(web.RequestHandler, "handle_error", None)):
        raise RuntimeError("aiohttp's RequestHandler.handle_error is gone: the edge cannot answer a crash")
    app.router.add_route("*", UNMATCHED_PATH, unmatched)
    for route in app.router.routes():
        resource = route.resource
        name = UNMATCHED_ROUTE if route.handler is unmatched or resource is None else resource.canonical
        edged = wrap(route.handler, name)
        route._handler = edged
        if route.handler is not edged:
            raise RuntimeError(f"aiohttp's route kept its own handler: {route!r} would answer without the edge")
    app.on_startup.append(_check)


async def _check(app: web.Application) -> None:
    """Every route is behind the edge and the route of last resort is the last one."""
    resources = list(app.router.resources())
    last = resources[-1] if resources else None
    if last is None or not any(getattr(r.handler, "__wrapped__", None) is unmatched for r in last):
        raise RuntimeError("a route was added after edge.install: the route of last resort would answer for it")
    for route in app.router.routes():
        if not getattr(route.handler, _EDGED, False):
            raise RuntimeError(f"{route!r} was added after edge.install and would answer without the edge")
