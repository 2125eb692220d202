"""The edge: domain errors to HTTP answers, Redis outages to 503, security headers.

API paths always answer ``{"error": {"code", "message", "fields"?}}``; pages
get a friendly HTML page instead of a stack trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.domain.errors import ApiError, Forbidden, NotFound, RateLimited, Unavailable
from server.web import access, metrics
from server.web.cors import cors_headers

log = logging.getLogger("longrun.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, ApiError], Awaitable[web.StreamResponse]]

ERROR_PAGE: web.AppKey[ErrorPage] = web.AppKey("error_page")

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
    return path.startswith("/api/") or path.startswith("/ws/") or path in ("/metrics", "/healthz", "/readyz")


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


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware of our own (each layer costs every request): refuse cross-site
    writes, save the session a handler changed (aiohttp-session's middleware, folded in), map
    errors to answers, count and log the request."""
    started = time.perf_counter()
    status = 500
    try:
        try:
            if request.method in _UNSAFE:
                refuse_cross_site(request)
            response = await handler(request)
        except web.HTTPException as exc:
            await access.save_session(request, exc)  # a redirect carries the session it changed
            response = await _recover(request, exc)
        except (ApiError, RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
            response = await _recover(request, exc)
        else:
            await access.save_session(request, response)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.observe(request, status, time.perf_counter() - started)


async def _recover(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The answer for what a handler raised, or ``exc`` again (an answer aiohttp gives as is).

    Not a middleware layer of its own: a WebSocket keeps every layer's frame alive."""
    if isinstance(exc, ApiError):
        return await _answer(request, exc)
    if isinstance(exc, ConnectionResetError):
        raise exc  # the client went away (redis-py wraps its own resets): nobody to answer
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionError):
        route = metrics.route_of(request)  # never the raw path: it holds a hash
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


async def response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare, the only hook (each one costs every answer): the security headers
    every answer carries and, for a page that embeds us, the CORS headers. Not on a WebSocket
    upgrade: its headers would stay in memory for the socket's whole life and mean nothing
    there."""
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
