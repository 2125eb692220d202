"""The demo bot API's aiohttp app: its routes, and the handlers that run scenarios once.

``POST /services/{slug}/run`` runs a scenario (calls sharing an ``Idempotency-Key`` share
one execution and one answer), ``resend-otp`` and ``cancel`` act on its session; the
``/demo/...`` routes are for tests and the demo page (outbox, calls seen, faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bots.demo.faults import CANCELLED, FAULT_MODES, SESSION_MODES, Fault, FaultPlan, misbehave, shape_session
from bots.demo.portal import Answer, Cancelled, Portal, Session, bounded_put
from bots.demo.scenarios import SCENARIOS
from bots.sdk import Reporter, reporter_for
from server.settings import Settings


class DemoBots:
    def __init__(self, settings: Settings, reporter: Reporter):
        self.portal = Portal(settings.bot_speed, reporter, prompts=settings.demo_prompts)
        self.answers: OrderedDict[str, asyncio.Future[Answer]] = OrderedDict()
        self.calls: OrderedDict[str, Counter[str]] = OrderedDict()
        self.faults = FaultPlan()

    async def handle_run(self, request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        scenario = SCENARIOS.get(slug)
        if scenario is None:
            return _json(404, {"status": "error", "error": f"unknown service {slug}"})
        try:
            body = orjson.loads(await request.read())
            h = str(body["requestHash"])
            data = dict(body.get("data") or {})
            otp = body.get("otp")
            given = body.get("input")
            if given is not None and not isinstance(given, dict):
                raise TypeError("input")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _json(400, {"status": "error", "error": "expected {requestHash, data, otp?, input?}"})
        phase = "otp" if otp is not None else "input" if given is not None else "run"
        key = request.headers.get("Idempotency-Key") or f"{h}:{phase}:{secrets.token_hex(4)}"
        self.calls.setdefault(h, Counter())[key] += 1
        bounded_put(self.calls, h, self.calls[h])

        session = self.portal.sessions.get(h)
        if session is None:
            session = Session(slug, data)
            bounded_put(self.portal.sessions, h, session)

        fault = self.faults.take(slug, data, phase)
        if fault is not None and fault.mode in SESSION_MODES:
            # not failures: they change how the portal behaves for this request
            shape_session(fault, session)
            fault = None
        if fault is not None:
            return _json(*await misbehave(self.portal, fault, h, session))

        existing = self.answers.get(key)
        if existing is not None:
            status, payload = await asyncio.shield(existing)
            return _json(status, payload)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        bounded_put(self.answers, key, future)
        try:
            answer = await scenario(self.portal, h, session, None if otp is None else str(otp), given)
        except Cancelled:
            answer = CANCELLED
        except BaseException:
            self.answers.pop(key, None)
            future.cancel()
            raise
        if answer[1].get("retryable"):
            self.answers.pop(key, None)  # only final answers are replayed
        future.set_result(answer)
        return _json(*answer)

    async def handle_resend(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        h = str(body.get("requestHash", ""))
        session = self.portal.sessions.get(h)
        if session is None or session.slug != request.match_info["slug"]:
            return _json(200, {"status": "error", "error": "No login in progress.", "retryable": False})
        key = request.headers.get("Idempotency-Key", "")
        self.calls.setdefault(h, Counter())[key or "resend"] += 1
        prompt = self.portal.text_code(h, session)
        return _json(200, {"status": "otp_required", "otp": prompt.serialize()})

    async def handle_cancel(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        h = str(body.get("requestHash", ""))
        self.calls.setdefault(h, Counter())["cancel"] += 1
        session = self.portal.sessions.get(h)
        if session is not None:
            session.cancelled.set()
            if session.task is not None:
                session.task.cancel()
        return _json(200, {"status": "cancelled"})

    async def handle_outbox(self, request: web.Request) -> web.Response:
        h = request.query.get("requestHash", "")
        return _json(200, {"messages": self.portal.outbox.get(h, [])})

    async def handle_captcha(self, request: web.Request) -> web.Response:
        """The answer to the captcha the request is shown now (the demo's stand-in for a
        person's eyes); 404 when none is shown."""
        session = self.portal.sessions.get(request.query.get("requestHash", ""))
        if session is None or session.captcha is None:
            return _json(404, {"error": "no captcha is shown for this request"})
        return _json(200, {"answer": session.captcha})

    async def handle_calls(self, request: web.Request) -> web.Response:
        h = request.query.get("requestHash", "")
        return _json(200, {"calls": dict(self.calls.get(h, Counter()))})

    async def handle_faults(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.faults.clear()
            return _json(200, {"faults": []})
        try:
            body = orjson.loads(await request.read())
            fault = Fault(
                mode=str(body["mode"]),
                count=int(body.get("count", 1)),
                service=body.get("service"),
                match=dict(body.get("match") or {}),
                phase=str(body.get("phase", "run")),
                code=str(body.get("code", "")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _json(400, {"error": "expected {mode, count?, service?, match?, phase?}"})
        if fault.mode not in FAULT_MODES:
            return _json(400, {"error": f"mode must be one of {', '.join(FAULT_MODES)}"})
        self.faults.add(fault)
        return _json(201, {"faults": len(self.faults)})


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


BOTS = web.AppKey("bots", DemoBots)


def create_bot_app(settings: Settings, reporter: Reporter | None = None) -> web.Application:
    """The demo bot API; reports through ``reporter`` or the one BOT_REPORT_MODE names."""
    app = web.Application(client_max_size=256 * 1024)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            chosen = reporter if reporter is not None else await stack.enter_async_context(reporter_for(settings))
            app[BOTS] = DemoBots(settings, chosen)
            yield
            background = app[BOTS].portal.background
            for task in list(background):
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)

    def route(method: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return await getattr(request.app[BOTS], method)(request)  # type: ignore[no-any-return]

        return handler

    app.router.add_post("/services/{slug}/run", route("handle_run"))
    app.router.add_post("/services/{slug}/resend-otp", route("handle_resend"))
    app.router.add_post("/services/{slug}/cancel", route("handle_cancel"))
    app.router.add_get("/demo/outbox", route("handle_outbox"))
    app.router.add_get("/demo/captcha", route("handle_captcha"))
    app.router.add_get("/demo/calls", route("handle_calls"))
    app.router.add_post("/demo/faults", route("handle_faults"))
    app.router.add_delete("/demo/faults", route("handle_faults"))

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    app.router.add_get("/healthz", healthz)
    return app
