"""The operator dashboard: ``/dashboard``, live over the same hub as the person's page.

Behind an operator login (``OPERATOR_PASSWORD``) or token (``OPERATOR_TOKEN``,
``Authorization: Bearer …`` for scripts). The figures come from
:class:`server.ops.operations.Operations`; one feed task per process renders them every
``REFRESH`` seconds while at least one dashboard socket is open and sends the
same HTML fragment to all of them through hub clients (so a slow operator
browser is conflated like any other). Without JavaScript the page refreshes
itself. Failed jobs can be retried or deleted, one or all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp_jinja2
import orjson
from aiohttp import web

from server.domain.errors import Forbidden, NotFound
from server.live.frames import Frame
from server.ops.figures import Snapshot
from server.web import access, csrf
from server.web.access import bearer_token, client_address
from server.web.api import json_response, read_json
from server.web.rendering import render
from server.web.socket_client import Client, forget, next_message, open_socket, refuse_cross_site
from server.web.typedefs import LIMITS, OPS, SETTINGS

log = logging.getLogger("longrun.dashboard")

routes = web.RouteTableDef()

REFRESH = 2.0
SESSION_KEY = "operator_until"
SESSION_HOURS = 12


# --------------------------------------------------------------------------- who is an operator


def configured(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    return bool(settings.operator_password or settings.operator_token)


async def is_operator(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    token = bearer_token(request)
    if token is not None:
        expected = settings.operator_token
        return expected is not None and hmac.compare_digest(token.encode(), expected.encode())
    if not request.cookies:
        return False
    until = (await access.session(request)).get(SESSION_KEY)
    return isinstance(until, int | float) and until > time.time()


async def require_operator(request: web.Request) -> None:
    if not configured(request):
        raise Forbidden("The dashboard is off: set OPERATOR_PASSWORD or OPERATOR_TOKEN.", code="dashboard_off")
    if not await is_operator(request):
        raise Forbidden("Operators only.", code="operators_only")


# --------------------------------------------------------------------------- views


def sparkline(values: Sequence[float], width: int = 240, height: int = 40) -> str:
    """SVG polyline points for a small chart (no build step, no script)."""
    if not values:
        return ""
    top = max(values) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - (v / top) * (height - 2) - 1:.1f}" for i, v in enumerate(values))


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    return f"{value / 60:.1f} min"


def context(snapshot: Snapshot) -> dict[str, Any]:
    charts = snapshot.charts
    return {
        "s": snapshot,
        "seconds": seconds,
        "charts": [
            {
                "title": "Jobs done per minute",
                "points": sparkline(charts["throughput"]),
                "last": charts["throughput"][-1:],
            },
            {"title": "Mean wait in queue (s)", "points": sparkline(charts["wait"]), "last": charts["wait"][-1:]},
            {"title": "Failures per minute", "points": sparkline(charts["failures"]), "last": charts["failures"][-1:]},
        ],
        "unfinished": sum(snapshot.requests_by_status.values()),
        "updated": time.strftime("%H:%M:%S", time.gmtime(snapshot.at)),
        "sockets_total": sum(snapshot.sockets.values()),
    }


def fragment(request: web.Request, snapshot: Snapshot) -> str:
    """The live part of the page, rendered once and sent to every dashboard socket."""
    env = aiohttp_jinja2.get_env(request.app)
    return env.get_template("dashboard_body.html").render(context(snapshot))


# --------------------------------------------------------------------------- pages


@routes.get("/dashboard")
async def dashboard(request: web.Request) -> web.StreamResponse:
    if not configured(request):
        await require_operator(request)
    if not await is_operator(request):
        raise web.HTTPSeeOther("/dashboard/login")
    snapshot = await request.app[OPS].snapshot()
    return render(
        request,
        "dashboard.html",
        {"body": fragment(request, snapshot), "csrf": await csrf.token(request), "head_refresh": 5},
        lang="en",
    )


@routes.get("/dashboard/login")
async def login_page(request: web.Request) -> web.Response:
    await _login_allowed(request)
    return render(request, "dashboard_login.html", {"csrf": await csrf.token(request), "error": ""}, lang="en")


@routes.post("/dashboard/login")
async def login(request: web.Request) -> web.StreamResponse:
    await _login_allowed(request)
    form = await request.post()
    await csrf.verify(request, form)
    await request.app[LIMITS].operator_login(client_address(request))
    settings = request.app[SETTINGS]
    given = form.get("password")
    expected = settings.operator_password
    if not (isinstance(given, str) and expected and hmac.compare_digest(given.encode(), expected.encode())):
        log.warning("failed operator login from %s", client_address(request))
        return render(
            request,
            "dashboard_login.html",
            {"csrf": await csrf.token(request), "error": "That password is not right."},
            status=403,
            lang="en",
        )
    session = await access.session(request)
    session[SESSION_KEY] = time.time() + SESSION_HOURS * 3600
    raise web.HTTPSeeOther("/dashboard")


@routes.post("/dashboard/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    await csrf.verify(request, await request.post())
    (await access.session(request)).pop(SESSION_KEY, None)
    raise web.HTTPSeeOther("/dashboard/login")


async def _login_allowed(request: web.Request) -> None:
    if not request.app[SETTINGS].operator_password:
        raise Forbidden("Password login is off: set OPERATOR_PASSWORD (or use OPERATOR_TOKEN).", code="dashboard_off")


@routes.post("/dashboard/actions")
async def actions(request: web.Request) -> web.StreamResponse:
    """The page's retry / delete buttons (a plain form: works without JavaScript)."""
    await require_operator(request)
    form = await request.post()
    await csrf.verify(request, form)
    action = str(form.get("action", ""))
    await _act(request, action)
    raise web.HTTPSeeOther("/dashboard")


async def _act(request: web.Request, action: str) -> int:
    ops = request.app[OPS]
    verb, _, job_id = action.partition(":")
    if verb == "retry-all":
        return await ops.retry_all()
    if verb == "delete-all":
        return await ops.delete_all()
    if verb == "retry" and job_id:
        done = await ops.retry(job_id)
    elif verb == "delete" and job_id:
        done = await ops.delete(job_id)
    else:
        raise NotFound("No such action.")
    if not done:
        raise NotFound("No such failed job (it may have been retried or deleted already).")
    return 1


# --------------------------------------------------------------------------- JSON and live feed


@routes.get("/api/dashboard")
async def dashboard_json(request: web.Request) -> web.Response:
    await require_operator(request)
    return web.Response(
        body=orjson.dumps((await request.app[OPS].snapshot()).as_dict()), content_type="application/json"
    )


@routes.post("/api/dashboard/failed-jobs/{action}")
async def dashboard_action_json(request: web.Request) -> web.Response:
    """``retry`` / ``delete`` with ``{"job_id": …}``, or ``retry-all`` / ``delete-all``."""
    await require_operator(request)
    action = request.match_info["action"]
    job_id = ""
    if action in ("retry", "delete"):
        body = await read_json(request)
        job_id = str(body.get("job_id", "")) if isinstance(body, dict) else ""
    count = await _act(request, f"{action}:{job_id}" if job_id else action)
    return json_response({"done": count}, status=202)


class Feed:
    """Renders the dashboard fragment every REFRESH seconds while anyone watches."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.task: asyncio.Task[None] | None = None

    def join(self, request: web.Request, client: Client) -> None:
        self.clients.add(client)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(request))

    def leave(self, client: Client) -> None:
        self.clients.discard(client)

    async def _run(self, request: web.Request) -> None:
        while self.clients:
            try:
                snapshot = await request.app[OPS].snapshot()
                text = orjson.dumps({"type": "dashboard", "html": fragment(request, snapshot)}).decode()
            except Exception as exc:  # Redis down: say so, keep trying
                text = orjson.dumps({"type": "error", "code": "unavailable", "message": str(exc)[:200]}).decode()
            frame = Frame(text, -1, keep=False)
            for client in list(self.clients):
                client.offer(frame)
            await asyncio.sleep(REFRESH)


FEED = web.AppKey("dashboard_feed", Feed)


@routes.get("/ws/dashboard")
async def dashboard_socket(request: web.Request) -> web.StreamResponse:
    refuse_cross_site(request)
    await require_operator(request)
    client = await open_socket(request, "dashboard")
    ws = client.ws
    client.held = False
    feed = request.app[FEED]
    feed.join(request, client)
    try:
        while await next_message(client) is not None:
            pass  # the dashboard's page only listens
    finally:
        forget(request.app, client)
        feed.leave(client)
        client.closed = True
    return ws


def setup(app: web.Application) -> None:
    app[FEED] = Feed()
    app.add_routes(routes)

    async def stop_feed(app: web.Application) -> None:
        task = app[FEED].task
        app[FEED].clients.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=2.0)

    app.on_shutdown.append(stop_feed)
